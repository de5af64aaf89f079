"""When the next scheduled backup is due."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from backups.models import Backup, BackupStatus, BackupTarget
from backups.selectors import next_due

pytestmark = [pytest.mark.django_db]


def test_an_interval_after_a_good_backup_and_an_hour_after_a_failed_one():
    target = BackupTarget.objects.create(name="crm", url_env="CRM_URL", interval_hours=24)
    assert next_due(target, None) == target.created_at  # a new target is due at once
    start = timezone.now() - timedelta(hours=2)
    good = Backup.objects.create(target=target, status=BackupStatus.SUCCEEDED, engine="sqlite", started_at=start)
    assert next_due(target, good) == start + timedelta(hours=24)
    failed = Backup.objects.create(target=target, status=BackupStatus.FAILED, engine="sqlite", started_at=start)
    assert next_due(target, failed) == start + timedelta(hours=1)
    hourly = BackupTarget.objects.create(name="hourly", url_env="H_URL", interval_hours=1)
    failed.target = hourly
    assert next_due(hourly, failed) == start + timedelta(hours=1)


def test_a_new_target_is_not_missing_today_before_its_first_backup_is_late():
    from backups.selectors import readiness

    target = BackupTarget.objects.create(name="fresh", url_env="FRESH_URL", rpo_hours=26)
    fresh = readiness(target)
    assert fresh.missing_days == [] and fresh.first_pending and fresh.problems == ["no verified backup"]
    BackupTarget.objects.filter(pk=target.pk).update(created_at=timezone.now() - timedelta(hours=30))
    target.refresh_from_db()
    late = readiness(target)
    assert not late.first_pending and timezone.now().date() in late.missing_days
