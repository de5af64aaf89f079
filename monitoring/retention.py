"""The monitoring tables retention prunes (registered in ``apps.py``; ``controlplane.retention`` runs them)."""

from __future__ import annotations

from datetime import datetime

from django.db.models import QuerySet

from controlplane.retention import Rule
from monitoring.models import HealthMetric, RequestRollup, ServiceHour, ServiceMinute, SignalSample


def _health_metrics(cutoff: datetime) -> QuerySet:
    return HealthMetric.objects.filter(time__lt=cutoff)


def _request_rollups(cutoff: datetime) -> QuerySet:
    return RequestRollup.objects.filter(minute__lt=cutoff)


def _service_minutes(cutoff: datetime) -> QuerySet:
    return ServiceMinute.objects.filter(minute__lt=cutoff)


def _service_hours(cutoff: datetime) -> QuerySet:
    return ServiceHour.objects.filter(hour__lt=cutoff)


def _signal_samples(cutoff: datetime) -> QuerySet:
    return SignalSample.objects.filter(at__lt=cutoff)


RULES = [
    Rule("health metrics", "HEALTH_METRICS_RETENTION_DAYS", _health_metrics),
    Rule("request rollups", "REQUEST_ROLLUPS_RETENTION_DAYS", _request_rollups),
    Rule("service minutes", "SERVICE_MINUTE_RETENTION_DAYS", _service_minutes),
    Rule("service hours", "SERVICE_HOUR_RETENTION_DAYS", _service_hours),
    Rule("signal samples", "SIGNAL_SAMPLE_RETENTION_DAYS", _signal_samples),
]
