"""The monitoring part of the operations API: the product's services and their signals, request figures
and the detailed health reports."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from ninja import Query, Router, Schema

from controlplane.api import ApiError
from controlplane.models import Scope
from controlplane.openapi import Error, token_auth
from monitoring.checks import COMPREHENSIVE, ENHANCED
from monitoring.health import MEDIA_TYPE, report
from monitoring.models import Service
from monitoring.selectors import Signal, SignalValue, request_figures, request_figures_by_view, service_signals
from monitoring.service_signals import services_signals

WINDOWS = {"5m": timedelta(minutes=5), "1h": timedelta(hours=1), "24h": timedelta(hours=24)}

router = Router(tags=["monitoring"], auth=token_auth(Scope.MONITORING_READ))

_ERRORS: dict[int, Any] = {400: Error, 401: Error, 403: Error, 503: Error}


class PerformanceDashboard(Schema):
    generated_at: str
    windows: dict[str, dict[str, Any]]


# --- Services -------------------------------------------------------------------------------------

_WINDOW = re.compile(r"([1-9][0-9]{0,4})([mhd])")
_WINDOW_UNITS = {"m": timedelta(minutes=1), "h": timedelta(hours=1), "d": timedelta(days=1)}
# From one minute (the rollups' grain) to an SLO's default window.
MIN_WINDOW, MAX_WINDOW = timedelta(minutes=1), timedelta(days=28)
CURRENT_WINDOW = "5m"  # the list's "current" signals


def parse_window(text: str) -> timedelta:
    """``5m``, ``1h``, ``7d``... as a timedelta; ApiError 400 naming ``window`` otherwise."""
    match = _WINDOW.fullmatch(text.strip())
    span = int(match[1]) * _WINDOW_UNITS[match[2]] if match else None
    if span is None or not MIN_WINDOW <= span <= MAX_WINDOW:
        raise ApiError(
            400,
            "invalid",
            "window must be a number of minutes, hours or days from 1m to 28d (1m, 5m, 15m, 1h, 6h, 24h, 7d, 28d)",
            field="window",
        )
    return span


class SignalOut(Schema):
    signal: str
    unit: str
    window_seconds: int
    value: float | None
    requests: float | None
    error: str


class SourceOut(Schema):
    id: int
    kind: str
    enabled: bool
    up: bool | None
    last_success: str | None
    last_error: str


class ServiceOut(Schema):
    name: str
    description: str
    enabled: bool
    up: float | None
    signals: dict[str, SignalOut]
    sources: list[SourceOut]


class ServicesOut(Schema):
    generated_at: str
    window: str
    services: list[ServiceOut]


class ServiceDetail(ServiceOut):
    generated_at: str
    window: str


def _service_body(service: Service, values: dict[Signal, SignalValue]) -> dict[str, Any]:
    """One service as the API shows it: its signals (the service's ``up`` among them) and its sources."""
    return {
        "name": service.name,
        "description": service.description,
        "enabled": service.enabled,
        "up": values[Signal.UP].value,
        "signals": {signal.value: value.as_dict() for signal, value in values.items()},
        "sources": [
            {
                "id": source.pk,
                "kind": source.kind,
                "enabled": source.enabled,
                "up": source.up,
                "last_success": source.last_success.isoformat() if source.last_success else None,
                "last_error": source.last_error,
            }
            for source in service.sources.all()
        ],
    }


@router.get("/services", url_name="api-services", response={200: ServicesOut, **_ERRORS})
def services(request: HttpRequest) -> JsonResponse:
    """Every service of the product with its current signals (over the last 5 minutes): request rate,
    error ratio, p50/p95/p99, up; and each metric source's kind, up and last error."""
    now = timezone.now()
    window = parse_window(CURRENT_WINDOW)
    found = list(Service.objects.prefetch_related("sources"))
    # In a fixed number of queries whatever the number of services; a Prometheus source's figures are
    # the values its worker last stored, not a round trip to its server per service and signal.
    signals = services_signals(found, window, now)
    body = [_service_body(service, signals[service.name]) for service in found]
    return JsonResponse({"generated_at": now.isoformat(), "window": CURRENT_WINDOW, "services": body})


@router.get("/services/{str:name}", url_name="api-service", response={200: ServiceDetail, 404: Error, **_ERRORS})
def service(
    request: HttpRequest,
    name: str,
    window: str = Query(CURRENT_WINDOW, description="1m to 28d: 1m, 5m, 15m, 1h, 6h, 24h, 7d, 28d..."),
) -> JsonResponse:
    """One service's signals over a window ending now (``?window=1h``; 5 minutes by default)."""
    span = parse_window(window)
    found = Service.objects.prefetch_related("sources").filter(name=name).first()
    if found is None:
        raise ApiError(404, "not_found", f"no service named {name}")
    now = timezone.now()
    body = _service_body(found, service_signals(found, span, now))
    return JsonResponse({"generated_at": now.isoformat(), "window": window.strip(), **body})


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
