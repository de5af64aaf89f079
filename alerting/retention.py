"""The alerting tables retention prunes (registered in ``apps.py``; ``controlplane.retention`` runs them)."""

from __future__ import annotations

from datetime import datetime

from django.db.models import QuerySet

from alerting.models import Alert, AlertState, Delivery, DeliveryStatus
from controlplane.retention import Rule


def _deliveries(cutoff: datetime) -> QuerySet:
    return Delivery.objects.filter(created_at__lt=cutoff).exclude(status=DeliveryStatus.PENDING)


def _resolved_alerts(cutoff: datetime) -> QuerySet:
    return Alert.objects.filter(state=AlertState.RESOLVED, resolved_at__lt=cutoff)


RULES = [
    Rule("alert deliveries", "DELIVERY_RETENTION_DAYS", _deliveries),
    Rule("resolved alerts", "RESOLVED_ALERT_RETENTION_DAYS", _resolved_alerts),
]
