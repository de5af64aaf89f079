"""Celery tasks of backups: take ids, call one service. Long runs get the backup timeout as their limit.

Backup and verification tasks are acknowledged when they start (``acks_late=False``): a worker lost
mid-dump must not start the dump again on redelivery; ``reap_stale`` marks the run failed and the
schedule takes the next one.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from celery import shared_task
from django.conf import settings
from django.db import transaction
from django.utils import timezone

logger = logging.getLogger(__name__)
VERIFY_EVERY = timedelta(hours=20)  # "daily", with room for a schedule that drifts


def _limits() -> dict[str, int]:
    return {
        "soft_time_limit": settings.BACKUP_TIMEOUT_SECONDS + 60,
        "time_limit": settings.BACKUP_TIMEOUT_SECONDS + 120,
    }


def queue_backup(target_id: int, *, requested_by: str, scheduled: bool = False) -> None:
    """Queue a backup once the current transaction commits."""
    transaction.on_commit(
        lambda: take_backup.apply_async(
            args=[target_id], kwargs={"requested_by": requested_by, "scheduled": scheduled}, **_limits()
        )
    )


def queue_verification(backup_id: int, *, requested_by: str) -> None:
    transaction.on_commit(
        lambda: verify_backup.apply_async(args=[backup_id], kwargs={"requested_by": requested_by}, **_limits())
    )


@shared_task(name="backups.tasks.take_backup", ignore_result=True, acks_late=False)
def take_backup(target_id: int, requested_by: str = "system", scheduled: bool = False) -> str:
    from backups.models import BackupTarget
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
    return backup.status


@shared_task(name="backups.tasks.verify_backup", ignore_result=True, acks_late=False)
def verify_backup(backup_id: int, requested_by: str = "system") -> str:
    from backups.engines import BackupError
    from backups.models import Backup
    from backups.services import AlreadyRunning, backup_verify
    from controlplane.audit import Actor

    backup = Backup.objects.select_related("target").filter(pk=backup_id).first()
    if backup is None:
        return "no such backup"
    try:
        return backup_verify(backup=backup, actor=Actor.system(requested_by)).status
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
    verify = is_on(BACKUP_VERIFICATION, default=True)
    for target in BackupTarget.objects.filter(enabled=True):
        latest = target.backups.order_by("-started_at").first()
        running = latest is not None and latest.status == BackupStatus.RUNNING
        if not running and next_due(target, latest) <= now:
            queue_backup(target.pk, requested_by="schedule", scheduled=True)
            summary["backups"].append(target.name)
        newest = Backup.objects.succeeded().filter(target=target).order_by("-started_at").first()
        recently = Verification.objects.filter(backup__target=target, started_at__gte=now - VERIFY_EVERY).exists()
        if verify and newest is not None and not newest.verification and not recently:
            queue_verification(newest.pk, requested_by="schedule")
            summary["verifications"].append(newest.pk)
        summary["pruned"] += backups_prune(target=target, actor=Actor.system("backups retention"), now=now)
    if summary["backups"] or summary["verifications"] or summary["pruned"] or summary["reaped"]:
        logger.info("backups due: %s", summary)
    return summary
