"""Celery tasks of backups: take ids, call one service. Long runs get the backup timeout as their limit.

Backup and verification tasks are acknowledged when they start (``acks_late=False``): a worker lost
mid-dump must not start the dump again on redelivery; once the run's heartbeat is silent,
``reap_stale`` (or the next request) marks it failed and the schedule takes the next one.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from celery import shared_task
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from controlplane.redaction import redact_text

logger = logging.getLogger(__name__)
VERIFY_EVERY = timedelta(hours=20)  # "daily", with room for a schedule that drifts


def _limits() -> dict[str, int]:
    return {
        "soft_time_limit": settings.BACKUP_TIMEOUT_SECONDS + 60,
        "time_limit": settings.BACKUP_TIMEOUT_SECONDS + 120,
    }


def queue_backup(target_id: int, *, requested_by: str, scheduled: bool = False) -> None:
    """Send a backup task once the current transaction commits (see ``send_backup``)."""
    transaction.on_commit(lambda: send_backup(target_id, requested_by=requested_by, scheduled=scheduled))


def queue_verification(backup_id: int, *, requested_by: str) -> None:
    transaction.on_commit(lambda: send_verification(backup_id, requested_by=requested_by))


def send_backup(target_id: int, *, requested_by: str, scheduled: bool = False) -> bool:
    """Send a backup task now; False when the broker did not take it. Never raises (it runs after commit).

    An operator's request that could not be sent is recorded on the target, and run_due sends it again;
    a scheduled one is simply still due at the next round.
    """
    from backups.models import BackupTarget

    kwargs = {"requested_by": requested_by, "scheduled": scheduled}
    rows = BackupTarget.objects.filter(pk=target_id)
    record = None if scheduled else (rows, "dispatch_error", "dispatch_requested_by")
    return _send(take_backup, [target_id], kwargs, record)


def send_verification(backup_id: int, *, requested_by: str) -> bool:
    """Send a verification task now; one that could not be sent is recorded on the backup for run_due."""
    from backups.models import Backup

    record = (Backup.objects.filter(pk=backup_id), "verify_dispatch_error", "verify_requested_by")
    return _send(verify_backup, [backup_id], {"requested_by": requested_by}, record)


def _send(task: Any, args: list[Any], kwargs: dict[str, Any], record: tuple[Any, str, str] | None) -> bool:
    """apply_async, and on the row of ``record`` (rows, error field, requester field) what came of it."""
    try:
        task.apply_async(args=args, kwargs=kwargs, **_limits())
    except Exception as exc:  # noqa: BLE001 - whatever the broker client raises: recorded, sent again later
        logger.error("could not send %s%s to the broker: %s", task.name, args, exc)
        if record is not None:
            rows, error_field, by_field = record
            error = f"could not reach the broker: {redact_text(str(exc))}"[:1000]
            _record(rows, {error_field: error, by_field: kwargs["requested_by"][:150]})
        return False
    if record is not None:
        rows, error_field, by_field = record
        _record(rows.exclude(**{error_field: ""}), {error_field: "", by_field: ""})
    return True


def _record(rows: Any, values: dict[str, str]) -> None:
    try:
        rows.update(**values)
    except Exception as exc:  # noqa: BLE001 - the database is gone too: nothing more to do after commit
        logger.error("could not record a backup task's dispatch: %s", exc)


@shared_task(name="backups.tasks.take_backup", ignore_result=True, acks_late=False)
def take_backup(target_id: int, requested_by: str = "system", scheduled: bool = False) -> str:
    from backups.copies import copies_upload
    from backups.models import BackupStatus, BackupTarget
    from backups.selectors import next_due
    from backups.services import AlreadyRunning, backup_create
    from controlplane.audit import Actor

    target = BackupTarget.objects.filter(pk=target_id).first()
    if target is None:
        return "no such target"
    if scheduled:  # a scheduled run queued twice, or after a manual one, must not dump twice
        latest = target.backups.order_by("-started_at").first()
        if not target.enabled or next_due(target, latest) > timezone.now():
            return "not due"
    try:
        backup = backup_create(target=target, actor=Actor.system(requested_by))
    except AlreadyRunning as exc:
        return str(exc)
    if backup.status == BackupStatus.SUCCEEDED:  # off-site copies right away; a failed one is retried by run_due
        copies_upload(backup=backup, actor=Actor.system(requested_by))
    return backup.status


@shared_task(name="backups.tasks.upload_copy", ignore_result=True, acks_late=False)
def upload_copy(copy_id: int, requested_by: str = "system") -> str:
    from backups.copies import copy_upload
    from backups.models import BackupCopy
    from controlplane.audit import Actor

    copy = BackupCopy.objects.select_related("backup__target").filter(pk=copy_id).first()
    if copy is None:
        return "no such copy"
    return copy_upload(copy=copy, actor=Actor.system(requested_by)).status


@shared_task(name="backups.tasks.verify_backup", ignore_result=True, acks_late=False)
def verify_backup(backup_id: int, requested_by: str = "system", storage: str = "") -> str:
    """Verify a backup, restored from its copy in ``storage`` (default: the local one)."""
    from backups.engines import BackupError
    from backups.models import Backup
    from backups.services import AlreadyRunning, backup_verify
    from controlplane.audit import Actor

    backup = Backup.objects.select_related("target").filter(pk=backup_id).first()
    if backup is None:
        return "no such backup"
    try:
        return backup_verify(backup=backup, actor=Actor.system(requested_by), storage=storage).status
    except (AlreadyRunning, BackupError) as exc:
        return str(exc)


@shared_task(name="backups.tasks.run_due", ignore_result=True, soft_time_limit=120, time_limit=150)
def run_due() -> dict[str, Any]:
    """Beat runs this every few minutes: reap lost runs, queue due backups and verifications, prune."""
    from backups.models import Backup, BackupStatus, BackupTarget, Verification
    from backups.selectors import next_due
    from backups.services import backups_prune, reap_stale
    from controlplane.audit import Actor
    from flags.selectors import BACKUP_VERIFICATION, is_on

    now = timezone.now()
    summary: dict[str, Any] = {"reaped": reap_stale(now=now), "backups": [], "verifications": [], "pruned": 0}
    summary["resent"] = _send_again()
    summary["copies"] = _send_copies(now)
    verify = is_on(BACKUP_VERIFICATION, default=True)
    for target in BackupTarget.objects.filter(enabled=True):
        latest = target.backups.order_by("-started_at").first()
        running = latest is not None and latest.status == BackupStatus.RUNNING
        if not running and next_due(target, latest) <= now:
            queue_backup(target.pk, requested_by="schedule", scheduled=True)
            summary["backups"].append(target.name)
        if target.is_pitr:  # the window and the real RPO, as pgBackRest sees them now
            from backups import pitr

            pitr.refresh(target)
        newest = Backup.objects.succeeded().filter(target=target).order_by("-started_at").first()
        recently = Verification.objects.filter(backup__target=target, started_at__gte=now - VERIFY_EVERY).exists()
        # A pgBackRest target is verified daily whatever its backups: each run restores to another time.
        if verify and newest is not None and (not newest.verification or target.is_pitr) and not recently:
            queue_verification(newest.pk, requested_by="schedule")
            summary["verifications"].append(newest.pk)
        summary["pruned"] += backups_prune(target=target, actor=Actor.system("backups retention"), now=now)
    if any(summary.values()):
        logger.info("backups due: %s", summary)
    return summary


def _send_copies(now: Any) -> list[int]:
    """Copies waiting for an upload (never sent, or failed and due again): sent to the worker. One the broker
    does not take stays waiting for the next round."""
    from backups.copies import copies_due
    from backups.models import BackupCopy

    sent = []
    for copy_id in copies_due(now=now):
        # Not sent again at every round while it waits in the queue: its claim would refuse the second anyway.
        later = now + timedelta(minutes=settings.BACKUP_COPY_RETRY_MINUTES)
        BackupCopy.objects.filter(pk=copy_id).update(next_attempt_at=later)
        if _send(upload_copy, [copy_id], {"requested_by": "schedule"}, None):
            sent.append(copy_id)
    return sent


def _send_again() -> list[str]:
    """Requests an operator made while the broker was down, sent now that it answers (this task runs)."""
    from backups.models import Backup, BackupTarget

    resent = []
    for target in BackupTarget.objects.exclude(dispatch_error=""):
        if send_backup(target.pk, requested_by=target.dispatch_requested_by or "operator"):
            resent.append(f"backup of {target.name}")
    for backup in Backup.objects.exclude(verify_dispatch_error=""):
        if send_verification(backup.pk, requested_by=backup.verify_requested_by or "operator"):
            resent.append(f"verification of backup #{backup.pk}")
    return resent


# --- Restore drills ------------------------------------------------------------------------------


def send_drill(plan: str, *, requested_by: str) -> bool:
    """Send a drill task now; False when the broker did not take it (the schedule drills the plan later)."""
    return _send(run_drill, [plan], {"requested_by": requested_by}, None)


@shared_task(name="backups.tasks.run_drill", ignore_result=True, acks_late=False)
def run_drill(plan: str, requested_by: str = "system") -> str:
    from backups.drills import drill_create
    from backups.services import AlreadyRunning
    from controlplane.audit import Actor
    from controlplane.errors import ControlPlaneError

    try:
        return drill_create(plan_name=plan, actor=Actor.system(requested_by)).status
    except (AlreadyRunning, ControlPlaneError) as exc:
        return str(exc)


@shared_task(name="backups.tasks.run_due_drills", ignore_result=True, soft_time_limit=120, time_limit=150)
def run_due_drills() -> dict[str, Any]:
    """Beat runs this every few minutes: reap lost drills, queue the drills of plans that are due."""
    from backups.drills import drill_due, reap_stale_drills
    from backups.models import Drill
    from controlplane.drills import drill_plans

    now = timezone.now()
    summary: dict[str, Any] = {"reaped": reap_stale_drills(now=now), "drills": []}
    for plan in drill_plans():
        latest = Drill.objects.filter(plan=plan.name).order_by("-started_at", "-id").first()
        if drill_due(plan, latest, now=now):
            transaction.on_commit(lambda name=plan.name: send_drill(name, requested_by="schedule"))  # type: ignore[misc]
            summary["drills"].append(plan.name)
    if any(summary.values()):
        logger.info("drills due: %s", summary)
    return summary
