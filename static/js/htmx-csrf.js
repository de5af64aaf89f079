// htmx requests (acknowledge buttons) carry the CSRF token from the page's cookie-less token field.
document.body.addEventListener("htmx:configRequest", function (event) {
  "use strict";
  var field = document.querySelector("input[name=csrfmiddlewaretoken]");
  if (field) { event.detail.headers["X-CSRFToken"] = field.value; }
});
