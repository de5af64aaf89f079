"""The monitoring part of the operations API."""

from __future__ import annotations

from datetime import timedelta

from django.http import HttpRequest, JsonResponse
from django.utils import timezone

from controlplane.api import api_view
from controlplane.models import Scope
from monitoring.selectors import request_figures, request_figures_by_view

WINDOWS = {"5m": timedelta(minutes=5), "1h": timedelta(hours=1), "24h": timedelta(hours=24)}


@api_view(scope=Scope.MONITORING_READ)
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
