"""The control plane's URLs plus two views that fail on purpose, for the Sentry tests."""

from __future__ import annotations

import logging

from django.contrib.auth.decorators import login_not_required
from django.http import HttpRequest, HttpResponse
from django.urls import path

from controlplane.urls import urlpatterns as controlplane_urlpatterns


@login_not_required
def boom(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("boom with token cpt_ZZZZZZZZZZZZZZZZZZZZZZZZZZZZZZ inside")


@login_not_required
def logs_an_error(request: HttpRequest) -> HttpResponse:
    logging.getLogger("controlplane.test").error("something failed but the request goes on")
    return HttpResponse("ok")


urlpatterns = [
    path("test/boom/", boom),
    path("test/log-error/", logs_an_error),
    path("health/boom/", boom),
    *controlplane_urlpatterns,
]
