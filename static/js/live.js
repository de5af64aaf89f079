// Refreshes the live part of a deployment page every second while the deployment is active.
(function () {
  "use strict";
  var box = document.getElementById("live");
  if (!box) { return; }
  function active() {
    var panel = box.querySelector("[data-active]");
    return panel ? panel.getAttribute("data-active") === "1" : false;
  }
  function refresh() {
    if (!active()) { return; }
    fetch(box.getAttribute("data-url"), { credentials: "same-origin", headers: { "X-Requested-With": "fetch" } })
      .then(function (response) { return response.ok ? response.text() : null; })
      .then(function (html) {
        if (html !== null) { box.innerHTML = html; }
        window.setTimeout(refresh, 1000);
      })
      .catch(function () { window.setTimeout(refresh, 3000); });
  }
  window.setTimeout(refresh, 1000);
})();
