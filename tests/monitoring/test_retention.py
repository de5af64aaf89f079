"""Retention: metrics older than the cutoff go, in batches; newer ones stay."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from monitoring.models import HealthMetric, RequestRollup
from monitoring.services import health_metrics_prune
from monitoring.tasks import prune_metrics, run_scheduled_checks

pytestmark = pytest.mark.django_db


def test_prune_deletes_old_rows_in_batches_and_keeps_new_ones(settings):
    now = timezone.now()
    old, recent = now - timedelta(days=31), now - timedelta(days=29)
    HealthMetric.objects.bulk_create(
        [HealthMetric(time=old, component="database", measurement="responseTime", status="pass") for _ in range(25)]
        + [HealthMetric(time=recent, component="database", measurement="responseTime", status="pass")]
    )
    RequestRollup.objects.bulk_create(
        [RequestRollup(minute=old - timedelta(minutes=i), view="v", method="GET", status_class="2xx") for i in range(7)]
        + [RequestRollup(minute=recent, view="v", method="GET", status_class="2xx")]
    )
    assert health_metrics_prune(older_than=now - timedelta(days=30), batch=10) == 32
    assert HealthMetric.objects.count() == 1 and RequestRollup.objects.count() == 1

    settings.HEALTH_METRICS_RETENTION_DAYS = 1
    assert prune_metrics() == 2
    assert not HealthMetric.objects.exists()


def test_the_scheduled_run_stores_one_row_per_measurement():
    stored = run_scheduled_checks()
    rows = HealthMetric.objects.all()
    assert stored == rows.count() >= 9
    assert {r.component for r in rows} >= {"database", "cache", "broker", "disk", "migrations", "celery-beat"}
    assert rows.get(component="database").status == "pass"
