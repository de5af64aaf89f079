"""The monitoring part of the operations API: request figures and the detailed health reports."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from ninja import Router, Schema

from controlplane.models import Scope
from controlplane.openapi import Error, token_auth
from monitoring.checks import COMPREHENSIVE, ENHANCED
from monitoring.health import MEDIA_TYPE, report
from monitoring.selectors import request_figures, request_figures_by_view

WINDOWS = {"5m": timedelta(minutes=5), "1h": timedelta(hours=1), "24h": timedelta(hours=24)}

router = Router(tags=["monitoring"], auth=token_auth(Scope.MONITORING_READ))

_ERRORS: dict[int, Any] = {400: Error, 401: Error, 403: Error, 503: Error}


class PerformanceDashboard(Schema):
    generated_at: str
    windows: dict[str, dict[str, Any]]


# The health reports are application/health+json (the IETF draft), 503 when a check fails: declared
# by hand, since ninja describes JSON answers only.
_HEALTH_REPORT = {
    "type": "object",
    "required": ["status", "serviceId", "checks"],
    "properties": {
        "status": {"type": "string", "enum": ["pass", "warn", "fail"]},
        "serviceId": {"type": "string"},
        "version": {"type": "string"},
        "description": {"type": "string"},
        "checks": {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "object"}}},
    },
}
_ERROR_REF = {"$ref": "#/components/schemas/Error"}
_HEALTH_RESPONSES = {
    "responses": {
        "200": {"description": "Every check passes or warns", "content": {MEDIA_TYPE: {"schema": _HEALTH_REPORT}}},
        "503": {
            "description": "A check fails (the report), or the database cannot be read (an error)",
            "content": {MEDIA_TYPE: {"schema": _HEALTH_REPORT}, "application/json": {"schema": _ERROR_REF}},
        },
    }
}


@router.get("/performance/dashboard", url_name="api-performance", response={200: PerformanceDashboard, **_ERRORS})
def performance_dashboard(request: HttpRequest) -> JsonResponse:
    """p50/p95/p99, error rate, throughput and database time over 5 minutes, 1 hour and 24 hours,
    overall and per view (from the per-minute rollups of every process)."""
    now = timezone.now()
    body = {}
    for name, span in WINDOWS.items():
        since = now - span
        body[name] = {
            "overall": request_figures(since, now).as_dict(),
            "views": {view: figures.as_dict() for view, figures in request_figures_by_view(since, now).items()},
        }
    return JsonResponse({"generated_at": now.isoformat(), "windows": body})


@router.get(
    "/health/enhanced",
    url_name="api-health-enhanced",
    response={400: Error, 401: Error, 403: Error},
    openapi_extra=_HEALTH_RESPONSES,
)
def enhanced(request: HttpRequest) -> HttpResponse:
    """The database, cache, broker, workers, disk and backups, each with its observed value."""
    return report(ENHANCED)


@router.get(
    "/health/comprehensive",
    url_name="api-health-comprehensive",
    response={400: Error, 401: Error, 403: Error},
    openapi_extra=_HEALTH_RESPONSES,
)
def comprehensive(request: HttpRequest) -> HttpResponse:
    """Every check, the deployed environments' endpoints included."""
    return report(COMPREHENSIVE)
