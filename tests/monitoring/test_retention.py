"""The scheduled checks store what retention later prunes (see tests/controlplane/test_retention.py)."""

from __future__ import annotations

import pytest

from monitoring.models import HealthMetric
from monitoring.tasks import run_scheduled_checks

pytestmark = pytest.mark.django_db


def test_the_scheduled_run_stores_one_row_per_measurement():
    stored = run_scheduled_checks()
    rows = HealthMetric.objects.all()
    assert stored == rows.count() >= 9
    assert {r.component for r in rows} >= {"database", "cache", "broker", "disk", "migrations", "celery-beat"}
    assert rows.get(component="database").status == "pass"
