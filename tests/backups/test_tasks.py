"""The scheduler task and the worker tasks: what is queued when, the verification flag, lost runs reaped."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from backups import engines
from backups.models import Backup, BackupStatus, BackupTarget, Verification, VerificationResult
from backups.services import AlreadyRunning, backup_create, backup_start, reap_stale, target_create, verification_start
from backups.tasks import run_due, take_backup, verify_backup
from controlplane.models import AuditEvent
from flags.services import flag_create, flag_update
from tests.backups.conftest import SYSTEM, make_sqlite, pg_url

pytestmark = pytest.mark.django_db
LOST = "did not finish in time: the worker was lost or the run hung"


@pytest.fixture(autouse=True)
def _only_our_targets(db):
    """The control plane's own target (from a data migration) is not part of these schedules."""
    BackupTarget.objects.filter(name="default").update(enabled=False)


@pytest.fixture
def second_sqlite(db, tmp_path, monkeypatch):
    path = make_sqlite(tmp_path / "second" / "other.sqlite3")
    monkeypatch.setenv("SECOND_DATABASE_URL", f"sqlite:///{path}")
    return target_create(data={"name": "second", "url_env": "SECOND_DATABASE_URL"}, actor=SYSTEM)


def _verification_flag(enabled: bool, django_capture_on_commit_callbacks) -> None:
    from controlplane.audit import Actor
    from flags.models import Flag

    with django_capture_on_commit_callbacks(execute=True):  # the flag snapshot is published after commit
        if Flag.objects.filter(name="backup_verification").exists():
            flag_update(name="backup_verification", changes={"enabled": enabled}, actor=Actor.system())
        else:
            data = {"name": "backup_verification", "enabled": enabled, "rollout_percent": 100}
            flag_create(data=data, actor=Actor.system())


def test_run_due_queues_due_backups_and_unverified_ones_then_the_worker_runs_them(
    sqlite_source, second_sqlite, django_capture_on_commit_callbacks, eager_tasks
):
    due = sqlite_source.target  # never backed up
    fresh = backup_create(target=second_sqlite, actor=SYSTEM)  # backed up just now, not verified yet
    disabled = target_create(data={"name": "off", "url_env": "OFF_URL", "enabled": False}, actor=SYSTEM)
    # Hourly, its backup started two hours ago and still running (within the timeout): not queued again.
    running = target_create(data={"name": "busy", "url_env": "BUSY_URL", "interval_hours": 1}, actor=SYSTEM)
    Backup.objects.create(target=running, engine="sqlite", started_at=timezone.now() - timedelta(hours=2))

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        summary = run_due()

    assert summary == {
        "reaped": 0,
        "backups": [due.name],
        "verifications": [fresh.pk],
        "pruned": 0,
        "resent": [],
        "copies": [],
    }
    assert len(callbacks) == 2 and not Backup.objects.filter(target=due).exists()  # queued, not yet run
    for callback in callbacks:  # the commit: the tasks go to the (eager) worker
        callback()

    taken = Backup.objects.get(target=due)
    assert (taken.status, taken.requested_by) == (BackupStatus.SUCCEEDED, "schedule")
    fresh.refresh_from_db()
    assert fresh.verification == VerificationResult.PASSED
    assert Verification.objects.get(backup=fresh).requested_by == "schedule"
    assert not Backup.objects.filter(target=disabled).exists()
    # Nothing is due any more: a second round queues nothing.
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        assert run_due()["backups"] == [] and callbacks == []


def test_scheduled_verification_obeys_the_backup_verification_flag(second_sqlite, django_capture_on_commit_callbacks):
    backup = backup_create(target=second_sqlite, actor=SYSTEM)

    _verification_flag(False, django_capture_on_commit_callbacks)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        assert run_due()["verifications"] == []
    assert callbacks == []

    _verification_flag(True, django_capture_on_commit_callbacks)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        assert run_due()["verifications"] == [backup.pk]
    assert len(callbacks) == 1


def test_a_backup_verified_recently_or_already_is_not_queued_again(second_sqlite, django_capture_on_commit_callbacks):
    backup = backup_create(target=second_sqlite, actor=SYSTEM)
    Verification.objects.create(backup=backup, status=VerificationResult.FAILED, started_at=timezone.now())
    with django_capture_on_commit_callbacks(execute=False):
        assert run_due()["verifications"] == []  # one failed an hour ago: the next try is tomorrow's
    Verification.objects.update(started_at=timezone.now() - timedelta(hours=21))
    with django_capture_on_commit_callbacks(execute=False):
        assert run_due()["verifications"] == [backup.pk]
    Backup.objects.filter(pk=backup.pk).update(verification=VerificationResult.PASSED)
    with django_capture_on_commit_callbacks(execute=False):
        assert run_due()["verifications"] == []


def test_take_backup_when_scheduled_does_not_dump_twice(second_sqlite):
    assert take_backup(second_sqlite.pk, requested_by="schedule", scheduled=True) == "succeeded"
    assert take_backup(second_sqlite.pk, requested_by="schedule", scheduled=True) == "not due"
    assert take_backup(second_sqlite.pk, requested_by="operator") == "succeeded"  # asked for: taken
    assert second_sqlite.backups.count() == 2
    backup_start(target=second_sqlite, actor=SYSTEM)
    assert take_backup(second_sqlite.pk) == "a backup of second is already running"
    assert take_backup(10**9) == "no such target"
    BackupTarget.objects.filter(pk=second_sqlite.pk).update(enabled=False, interval_hours=1)
    Backup.objects.update(started_at=timezone.now() - timedelta(days=1))
    assert take_backup(second_sqlite.pk, scheduled=True) == "not due"


def test_verify_backup_reports_what_it_could_not_do(second_sqlite):
    backup = backup_create(target=second_sqlite, actor=SYSTEM)
    assert verify_backup(backup.pk, requested_by="operator") == "passed"
    failed = Backup.objects.create(target=second_sqlite, engine="sqlite", status=BackupStatus.FAILED)
    assert verify_backup(failed.pk) == f"backup #{failed.pk} is failed: only a finished backup can be verified"
    assert verify_backup(10**9) == "no such backup"


# --- Lost runs -----------------------------------------------------------------------------------


def test_a_backup_left_running_by_a_lost_worker_is_failed_and_the_target_can_be_backed_up_again(
    second_sqlite, backup_dirs, settings, django_capture_on_commit_callbacks
):
    lost = backup_start(target=second_sqlite, actor=SYSTEM)
    old = timezone.now() - timedelta(seconds=settings.BACKUP_TIMEOUT_SECONDS + 120)
    Backup.objects.filter(pk=lost.pk).update(started_at=old)
    backup_dirs.partial.mkdir(parents=True)
    half_written = backup_dirs.partial / f"second-{old:%Y%m%dT%H%M%SZ}-{lost.pk}.1a2b3c4d.partial"
    half_written.write_bytes(b"PGDMP half")

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        summary = run_due()

    assert summary["reaped"] == 1
    lost.refresh_from_db()
    assert (lost.status, lost.error) == (BackupStatus.FAILED, LOST)
    assert not half_written.exists()
    assert AuditEvent.objects.get(action="backup.failed", object_id=str(lost.pk)).actor_label == "backups"
    assert len(callbacks) >= 1  # the alert evaluation
    assert backup_create(target=second_sqlite, actor=SYSTEM).status == BackupStatus.SUCCEEDED


def test_a_backup_still_within_its_time_is_not_reaped(second_sqlite):
    running = backup_start(target=second_sqlite, actor=SYSTEM)
    assert reap_stale() == 0
    running.refresh_from_db()
    assert running.status == BackupStatus.RUNNING
    with pytest.raises(AlreadyRunning):
        backup_create(target=second_sqlite, actor=SYSTEM)


@pytest.mark.service("postgres")
def test_a_verification_left_running_is_failed_and_its_scratch_database_dropped(pg_source, settings):
    backup = backup_create(target=pg_source.target, actor=SYSTEM)
    verification = verification_start(backup=backup, actor=SYSTEM)
    scratch = f"verify_{pg_source.server.label}_lost"
    engines.create_database(engines.from_url(pg_url("postgres"), variable="admin"), scratch)
    old = timezone.now() - timedelta(seconds=settings.BACKUP_TIMEOUT_SECONDS + 120)
    Verification.objects.filter(pk=verification.pk).update(scratch=scratch, started_at=old)
    assert pg_source.server.scratch_left() == [scratch]

    assert reap_stale() == 1

    verification.refresh_from_db()
    assert (verification.status, verification.failed_check, verification.error) == ("failed", "setup", LOST)
    assert verification.scratch_dropped and pg_source.server.scratch_left() == []
    backup.refresh_from_db()
    assert backup.verification == VerificationResult.FAILED
    assert pg_source.rows()["public.orders"] == 1000  # the source untouched
    assert backup_verify_again(backup) == VerificationResult.PASSED


def test_a_sqlite_verification_left_running_loses_its_scratch_file(second_sqlite, backup_dirs, settings):
    backup = backup_create(target=second_sqlite, actor=SYSTEM)
    verification = verification_start(backup=backup, actor=SYSTEM)
    scratch = backup_dirs.partial / "verify_second_lost.sqlite3"
    scratch.write_bytes(b"half a copy")
    old = timezone.now() - timedelta(seconds=settings.BACKUP_TIMEOUT_SECONDS + 120)
    Verification.objects.filter(pk=verification.pk).update(scratch=scratch.name, started_at=old)

    assert reap_stale() == 1

    verification.refresh_from_db()
    assert verification.status == VerificationResult.FAILED and verification.scratch_dropped
    assert not scratch.exists()
    assert backup_dirs.files() == [backup.file]


def backup_verify_again(backup: Backup) -> str:
    from backups.services import backup_verify

    return backup_verify(backup=backup, actor=SYSTEM).status
