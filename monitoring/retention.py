"""The monitoring tables retention prunes (registered in ``apps.py``; ``controlplane.retention`` runs them)."""

from __future__ import annotations

from datetime import datetime

from django.db.models import QuerySet

from controlplane.retention import Rule
from monitoring.alert_models import Alert, AlertState, Delivery, DeliveryStatus
from monitoring.models import HealthMetric, RequestRollup


def _health_metrics(cutoff: datetime) -> QuerySet:
    return HealthMetric.objects.filter(time__lt=cutoff)


def _request_rollups(cutoff: datetime) -> QuerySet:
    return RequestRollup.objects.filter(minute__lt=cutoff)


def _deliveries(cutoff: datetime) -> QuerySet:
    return Delivery.objects.filter(created_at__lt=cutoff).exclude(status=DeliveryStatus.PENDING)


def _resolved_alerts(cutoff: datetime) -> QuerySet:
    return Alert.objects.filter(state=AlertState.RESOLVED, resolved_at__lt=cutoff)


RULES = [
    Rule("health metrics", "HEALTH_METRICS_RETENTION_DAYS", _health_metrics),
    Rule("request rollups", "REQUEST_ROLLUPS_RETENTION_DAYS", _request_rollups),
    Rule("alert deliveries", "DELIVERY_RETENTION_DAYS", _deliveries),
    Rule("resolved alerts", "RESOLVED_ALERT_RETENTION_DAYS", _resolved_alerts),
]
