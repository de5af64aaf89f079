"""Retention: every table that grows without bound, its setting, and a daily prune in small batches.

Backups have their own retention per target (``backups.services.backups_prune``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

logger = logging.getLogger(__name__)
BATCH = 5000


@dataclass(frozen=True)
class Rule:
    name: str
    setting: str  # days; 0 keeps everything
    rows: Callable[[datetime], QuerySet]  # what is older than the cutoff and may go


def _health_metrics(cutoff: datetime) -> QuerySet:
    from monitoring.models import HealthMetric

    return HealthMetric.objects.filter(time__lt=cutoff)


def _request_rollups(cutoff: datetime) -> QuerySet:
    from monitoring.models import RequestRollup

    return RequestRollup.objects.filter(minute__lt=cutoff)


def _deliveries(cutoff: datetime) -> QuerySet:
    from monitoring.alert_models import Delivery, DeliveryStatus

    return Delivery.objects.filter(created_at__lt=cutoff).exclude(status=DeliveryStatus.PENDING)


def _resolved_alerts(cutoff: datetime) -> QuerySet:
    from monitoring.alert_models import Alert, AlertState

    return Alert.objects.filter(state=AlertState.RESOLVED, resolved_at__lt=cutoff)


def _deployment_logs(cutoff: datetime) -> QuerySet:
    from deployments.models import FINISHED, LogLine

    return LogLine.objects.filter(time__lt=cutoff, deployment__status__in=FINISHED)


def _step_runs(cutoff: datetime) -> QuerySet:
    from deployments.models import FINISHED, StepRun

    return StepRun.objects.filter(started_at__lt=cutoff, deployment__status__in=FINISHED)


def _audit_events(cutoff: datetime) -> QuerySet:
    from controlplane.models import AuditEvent

    return AuditEvent.objects.filter(time__lt=cutoff)


RULES = [
    Rule("health metrics", "HEALTH_METRICS_RETENTION_DAYS", _health_metrics),
    Rule("request rollups", "REQUEST_ROLLUPS_RETENTION_DAYS", _request_rollups),
    Rule("alert deliveries", "DELIVERY_RETENTION_DAYS", _deliveries),
    Rule("resolved alerts", "RESOLVED_ALERT_RETENTION_DAYS", _resolved_alerts),
    Rule("deployment log lines", "DEPLOYMENT_LOG_RETENTION_DAYS", _deployment_logs),
    Rule("deployment step runs", "DEPLOYMENT_LOG_RETENTION_DAYS", _step_runs),
    Rule("audit events", "AUDIT_RETENTION_DAYS", _audit_events),
]


def delete_in_batches(queryset: QuerySet, batch: int = BATCH) -> int:
    """Delete ``queryset`` a batch at a time: short transactions never block writers for long, and a
    crash half-way loses no progress."""
    deleted = 0
    while True:
        ids = list(queryset.order_by().values_list("pk", flat=True)[:batch])
        if not ids:
            return deleted
        with transaction.atomic():
            deleted += queryset.model.objects.filter(pk__in=ids).delete()[0]


def prune(*, now: datetime | None = None, batch: int = BATCH) -> dict[str, Any]:
    """Apply every rule; returns rows deleted per rule (None where the setting keeps everything)."""
    now = now or timezone.now()
    deleted: dict[str, Any] = {}
    for rule in RULES:
        days = getattr(settings, rule.setting)
        if not days:
            deleted[rule.name] = None
            continue
        deleted[rule.name] = delete_in_batches(rule.rows(now - timedelta(days=days)), batch)
    logger.info("retention: %s", deleted)
    return deleted
