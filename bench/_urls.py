from __future__ import annotations

from django.contrib.auth.decorators import login_not_required
from django.http import HttpRequest, JsonResponse
from django.urls import path

from controlplane.urls import urlpatterns as controlplane_urlpatterns

FIXED = {"status": "ok", "service": "controlplane", "flags": 14}


@login_not_required
def trivial(request: HttpRequest) -> JsonResponse:
    """The yardstick: a fixed JSON body, no I/O."""
    return JsonResponse(FIXED)


urlpatterns = [path("bench/trivial", trivial), *controlplane_urlpatterns]
