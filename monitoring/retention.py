"""The monitoring tables retention prunes (registered in ``apps.py``; ``controlplane.retention`` runs them)."""

from __future__ import annotations

from datetime import datetime

from django.db.models import QuerySet

from controlplane.retention import Rule
from monitoring.models import HealthMetric, RequestRollup


def _health_metrics(cutoff: datetime) -> QuerySet:
    return HealthMetric.objects.filter(time__lt=cutoff)


def _request_rollups(cutoff: datetime) -> QuerySet:
    return RequestRollup.objects.filter(minute__lt=cutoff)


RULES = [
    Rule("health metrics", "HEALTH_METRICS_RETENTION_DAYS", _health_metrics),
    Rule("request rollups", "REQUEST_ROLLUPS_RETENTION_DAYS", _request_rollups),
]
