"""Small pages of the control plane itself (not of an app)."""

from __future__ import annotations

from django.contrib.auth.decorators import login_not_required
from django.http import HttpRequest, HttpResponse, HttpResponsePermanentRedirect
from django.templatetags.static import static


@login_not_required  # asked before anyone signs in (the login page's tab)
def favicon(request: HttpRequest) -> HttpResponse:
    """Browsers ask /favicon.ico whatever the page links: sent to the icon the pages link, so it is not
    a 404 and a warning line on every first visit."""
    return HttpResponsePermanentRedirect(static("favicon.svg"))
