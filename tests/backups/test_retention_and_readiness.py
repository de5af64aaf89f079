"""Retention never deletes the newest verified backup; readiness reports RPO, RTO and the recovery window."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from django.core.files.base import ContentFile

from backups.models import Backup, BackupStatus, BackupTarget, Verification, VerificationResult
from backups.selectors import readiness
from backups.services import InvalidBackupTarget, backups_prune, prunable, storage, target_create
from controlplane.models import AuditEvent
from tests.backups.conftest import SYSTEM

pytestmark = pytest.mark.django_db
NOW = datetime(2025, 3, 10, 12, 0, tzinfo=UTC)
PASSED, FAILED, RUNNING = VerificationResult.PASSED, VerificationResult.FAILED, VerificationResult.RUNNING


def _target(name: str = "shop", *, created_days_ago: int = 60, **fields) -> BackupTarget:
    target = target_create(data={"name": name, "url_env": "SHOP_DATABASE_URL", **fields}, actor=SYSTEM)
    BackupTarget.objects.filter(pk=target.pk).update(created_at=NOW - timedelta(days=created_days_ago))
    target.refresh_from_db()
    return target


def _backup(target, started_at, verification=PASSED, status=BackupStatus.SUCCEEDED) -> Backup:
    """A finished backup row with a file in the backups storage (what backup_create leaves)."""
    backup = Backup.objects.create(
        target=target, engine="sqlite", status=status, started_at=started_at, verification=verification
    )
    if status == BackupStatus.SUCCEEDED:
        backup.file = storage().save(f"{target.name}/{backup.pk}.sqlite3", ContentFile(b"dump"))
        backup.save()
    return backup


# --- Retention -----------------------------------------------------------------------------------


def test_pruning_keeps_the_newest_verified_backup_even_when_older_than_retention(
    backup_dirs, django_capture_on_commit_callbacks
):
    target = _target(retention_days=3, recovery_window_days=1)
    oldest_verified = _backup(target, NOW - timedelta(days=40))
    newest_verified = _backup(target, NOW - timedelta(days=30))
    failed = _backup(target, NOW - timedelta(days=10), verification="", status=BackupStatus.FAILED)
    bad_verification = _backup(target, NOW - timedelta(days=5), verification=FAILED)
    recent_unverified = _backup(target, NOW - timedelta(days=1), verification="")
    being_verified = _backup(target, NOW - timedelta(days=20), verification=RUNNING)
    running = Backup.objects.create(target=target, engine="sqlite", started_at=NOW - timedelta(days=50))

    assert prunable(target, now=NOW) == [bad_verification, failed, oldest_verified]
    with django_capture_on_commit_callbacks(execute=True):
        assert backups_prune(target=target, actor=SYSTEM, now=NOW) == 3

    kept = set(Backup.objects.filter(target=target))
    assert kept == {newest_verified, recent_unverified, being_verified, running}
    # The pruned backups' files are gone after the commit; the kept ones' are there.
    assert sorted(backup_dirs.files()) == sorted(b.file for b in (newest_verified, recent_unverified, being_verified))
    events = AuditEvent.objects.filter(action="backup.prune")
    assert sorted(int(e.object_id) for e in events) == sorted(b.pk for b in (bad_verification, failed, oldest_verified))
    assert {e.before["file"] for e in events} == {bad_verification.file, oldest_verified.file, ""}


def test_pruning_by_count_keeps_the_newest_ones_and_the_newest_verified(backup_dirs):
    target = _target(retention_days=0, retention_count=2, recovery_window_days=1)
    verified = _backup(target, NOW - timedelta(days=9))
    older = _backup(target, NOW - timedelta(days=12))
    for verification in ("", FAILED):
        _backup(target, NOW - timedelta(days=8 if verification else 7), verification=verification)
    newest = list(target.backups.order_by("-started_at")[:2])

    backups_prune(target=target, actor=SYSTEM, now=NOW)

    assert set(target.backups.all()) == {*newest, verified}
    assert not Backup.objects.filter(pk=older.pk).exists()


def test_pruning_removes_the_verifications_of_a_pruned_backup_and_nothing_without_rules(backup_dirs):
    target = _target(retention_days=0, retention_count=0, recovery_window_days=1)
    old = _backup(target, NOW - timedelta(days=400), verification=FAILED)
    _backup(target, NOW - timedelta(days=300))
    assert backups_prune(target=target, actor=SYSTEM, now=NOW) == 0  # no rule: keep everything

    Verification.objects.create(backup=old, status=FAILED, started_at=NOW - timedelta(days=400))
    target = BackupTarget.objects.get(pk=target.pk)
    target.retention_days = 30
    target.save()
    assert backups_prune(target=target, actor=SYSTEM, now=NOW) == 1
    assert not Verification.objects.exists()


def test_retention_shorter_than_the_recovery_window_is_refused(db):
    with pytest.raises(InvalidBackupTarget) as error:
        target_create(data={"name": "shop", "retention_days": 3, "recovery_window_days": 7}, actor=SYSTEM)
    assert error.value.field == "retention_days"
    assert "fewer than the 7-day recovery window" in error.value.message
    assert not BackupTarget.objects.filter(name="shop").exists()


# --- Readiness -----------------------------------------------------------------------------------


def _daily(target, days: range, hour: int = 2) -> list[Backup]:
    """A verified backup on each of ``days`` days before NOW (0: today), at ``hour`` o'clock."""
    midnight = NOW.replace(hour=0)
    return [_backup(target, midnight - timedelta(days=d) + timedelta(hours=hour)) for d in days]


def test_a_verified_backup_every_day_within_the_rpo_is_ready(backup_dirs):
    target = _target(rpo_hours=26, recovery_window_days=7)
    backups = _daily(target, range(7))
    Verification.objects.create(
        backup=backups[1], status=PASSED, restore_ms=900, finished_at=NOW - timedelta(days=1), started_at=NOW
    )
    Verification.objects.create(
        backup=backups[0], status=PASSED, restore_ms=1234, finished_at=NOW - timedelta(hours=9), started_at=NOW
    )

    state = readiness(target, now=NOW)

    assert state.ready and state.rpo_met and state.window_complete
    assert state.latest_verified == backups[0] and state.age_hours == 10.0
    assert state.problems == []
    data = state.as_dict()
    assert data["rtoEstimateSeconds"] == 1.234  # the latest restore, not an earlier one
    assert (data["latestVerifiedAgeHours"], data["missingDays"], data["ready"]) == (10.0, [], True)


def test_a_day_without_a_verified_backup_is_reported_missing(backup_dirs):
    target = _target(rpo_hours=26, recovery_window_days=7)
    _daily(target, [0, 1, 2, 4, 5, 6])
    _backup(target, datetime(2025, 3, 7, 5, tzinfo=UTC), verification=FAILED)  # that day's: not good enough

    state = readiness(target, now=NOW)

    assert state.rpo_met and not state.ready
    assert state.missing_days == [date(2025, 3, 7)]
    assert state.problems == ["1 day(s) of the 7-day window unverified: 2025-03-07"]


def test_a_latest_verified_backup_older_than_the_rpo_misses_it_and_today_counts_as_missing(backup_dirs):
    target = _target(rpo_hours=26, recovery_window_days=3)
    _daily(target, [2])
    _backup(target, NOW - timedelta(hours=30))  # yesterday 06:00
    _backup(target, NOW - timedelta(hours=2), verification="")  # today's: not verified

    state = readiness(target, now=NOW)

    assert not state.rpo_met and state.age_hours == 30.0
    assert state.missing_days == [date(2025, 3, 10)]
    assert state.problems[0] == "latest verified backup is 30.0 h old (RPO 26 h)"


def test_days_before_the_target_existed_are_not_missing(backup_dirs):
    target = _target(created_days_ago=1, rpo_hours=36, recovery_window_days=7)
    _daily(target, [1])

    state = readiness(target, now=NOW)

    assert state.missing_days == [] and state.ready  # today excused by the RPO, days before creation too
    later = readiness(target, now=NOW + timedelta(days=2))
    assert later.missing_days == [date(2025, 3, 10), date(2025, 3, 11), date(2025, 3, 12)]


def test_no_verified_backup_and_a_failed_latest_backup_are_problems(backup_dirs):
    target = _target(created_days_ago=3, recovery_window_days=2)
    failed = _backup(target, NOW - timedelta(hours=1), verification="", status=BackupStatus.FAILED)
    Backup.objects.filter(pk=failed.pk).update(error="pg_dump failed (exit 1): connection refused\nmore")

    state = readiness(target, now=NOW)

    assert state.latest_verified is None and state.age_hours is None and not state.rpo_met
    assert state.problems == [
        "no verified backup",
        "2 day(s) of the 2-day window unverified: 2025-03-09, 2025-03-10",
        f"latest backup #{failed.pk} failed: pg_dump failed (exit 1): connection refused",
    ]
    assert state.as_dict()["latestVerifiedBackup"] is None
