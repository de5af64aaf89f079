"""Writes of the monitoring app that are not operator changes: heartbeats, stored metrics, pruning."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.db import transaction
from django.utils import timezone

from monitoring.models import HealthMetric, Heartbeat

if TYPE_CHECKING:
    from monitoring.checks import Result


def heartbeat_record(*, name: str, hostname: str) -> Heartbeat:
    """Store that ``name`` is alive now (an upsert: one row per name)."""
    heartbeat, _ = Heartbeat.objects.update_or_create(
        name=name, defaults={"last_seen": timezone.now(), "hostname": hostname[:255]}
    )
    return heartbeat


def health_metrics_record(*, results: list[Result]) -> list[HealthMetric]:
    """One row per measurement, all written together."""
    rows = [
        HealthMetric(
            time=r.time,
            component=r.component[:100],
            measurement=r.measurement[:50],
            component_type=r.component_type[:30],
            value=r.value,
            unit=r.unit[:20],
            status=r.status,
            output=r.output[:500],
        )
        for r in results
    ]
    with transaction.atomic():
        return HealthMetric.objects.bulk_create(rows)
