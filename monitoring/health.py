"""Health endpoints in the shape of the IETF health-check draft (media type application/health+json)."""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt

from monitoring.checks import FAIL, READY, Result, run_group, worst

MEDIA_TYPE = "application/health+json"


def _response(body: dict[str, Any], status: int) -> HttpResponse:
    response = HttpResponse(json.dumps(body), status=status, content_type=MEDIA_TYPE)
    response["Cache-Control"] = "no-store"
    return response


def _document(results: list[Result], *, detailed: bool) -> tuple[dict[str, Any], int]:
    status = worst(r.status for r in results)
    checks: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        entry: dict[str, Any] = {"status": r.status}
        if detailed:
            entry.update(
                componentId=r.component,
                componentType=r.component_type,
                observedValue=r.value,
                observedUnit=r.unit,
                time=r.time.isoformat().replace("+00:00", "Z"),
                output=r.output,
            )
        checks.setdefault(r.key, []).append(entry)
    body: dict[str, Any] = {"status": status, "serviceId": "controlplane"}
    if detailed:
        if settings.CONTROLPLANE_RELEASE:  # the draft's version is a string: left out when unknown
            body["version"] = settings.CONTROLPLANE_RELEASE
        body["description"] = "control plane health"
    body["checks"] = checks
    return body, 503 if status == FAIL else 200


@csrf_exempt
@login_not_required
def live(request: HttpRequest) -> HttpResponse:
    """200 while the process serves; no I/O."""
    return _response({"status": "pass", "serviceId": "controlplane"}, 200)


@csrf_exempt
@login_not_required
def ready(request: HttpRequest) -> HttpResponse:
    """Database and cache; open to load balancers, so a status per component and nothing more."""
    body, status = _document(run_group(READY), detailed=False)
    return _response(body, status)


def report(group: str) -> HttpResponse:
    """The detailed report of a check group (the operations API's health/enhanced and comprehensive)."""
    body, status = _document(run_group(group), detailed=True)
    return _response(body, status)


# The paths HealthEndpointsMiddleware answers, with the URL name request metrics count each under:
# nothing is resolved for them.
PROBE_VIEWS_BY_PATH = {"/health/live": "health-live", "/health/ready": "health-ready"}


class HealthEndpointsMiddleware:
    """Answers /health/live and /health/ready before the rest of the stack.

    Load balancers probe by address, with a Host header that ALLOWED_HOSTS would refuse, over plain
    HTTP, without cookies: none of host validation, HTTPS redirect, sessions or login applies to a
    probe, and skipping them keeps the probes cheap.
    """

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        path = request.path_info
        if path == "/health/live":
            return live(request)
        if path == "/health/ready":
            return ready(request)
        return self.get_response(request)
