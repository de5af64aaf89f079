"""The writes of pgBackRest targets: a backup through pgBackRest, the recoverable window read back, a
point-in-time verification and a restore drill's restore. ``services`` (``drills`` for a drill) calls these
for targets of kind ``pgbackrest``; they record through its helpers (the same rows, audit events and
after-commit alerts as a dump's).

Kept apart from ``services`` so that a change to the dump path cannot touch this one, and the other way.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path

from django.conf import settings
from django.utils import timezone

from backups import engines
from backups.engines import pgbackrest
from backups.models import Backup, BackupStatus, BackupTarget, Verification
from controlplane.redaction import redact_text

logger = logging.getLogger(__name__)
INFO_TIMEOUT_SECONDS = 60


def repository(target: BackupTarget) -> engines.Repository:
    return engines.Repository(
        stanza=target.pgbackrest_stanza,
        config=target.pgbackrest_config,
        repo_path=target.pgbackrest_repo_path,
        pg_path=target.pg_data_dir,
        pg_port=target.pg_port,
        pg_socket=target.pg_socket_dir,
        os_user=target.os_user,
    )


def backup_kind(target: BackupTarget, *, now: datetime | None = None) -> str:
    """``full`` when the latest full backup is ``full_every_days`` old (or there is none), else ``diff``."""
    now = now or timezone.now()
    recent_full = target.backups.filter(
        status=BackupStatus.SUCCEEDED,
        manifest__type="full",
        started_at__gte=now - timedelta(days=target.full_every_days),
    )
    return "diff" if recent_full.exists() else "full"


def take_backup(backup: Backup) -> tuple[str, engines.Dump] | str:
    """Run ``pgbackrest backup`` for the claimed ``backup``: the record of the set it made, or why not.

    There is no file in the backups storage: the set lives in pgBackRest's repository, named by its label.
    """
    target = backup.target
    backup.engine = "pgbackrest"
    repo = repository(target)
    kind = backup_kind(target)
    try:
        repo.validate()
        pgbackrest.backup(repo, kind=kind, timeout=settings.BACKUP_TIMEOUT_SECONDS)
        window = pgbackrest.window(repo, timeout=INFO_TIMEOUT_SECONDS)
    except engines.BackupError as exc:
        return redact_text(str(exc))
    record_window(target, window)
    newest = max(window.info.backups, key=lambda b: b.stopped_at, default=None)
    if newest is None:
        return "pgbackrest backup finished but pgbackrest info lists no backup"
    manifest = {
        "label": newest.label,
        "type": newest.type,
        "walStart": newest.wal_start,
        "walStop": newest.wal_stop,
        "clusterBytes": newest.size_bytes,
        "stoppedAt": newest.stopped_at.isoformat(),
        "requestedType": kind,
    }
    versions = {"pgbackrest": engines.tool_version(pgbackrest.pgbackrest_binary()), "server": window.info.version}
    return "", engines.Dump(Path(), newest.repo_bytes, "", "pgbackrest", versions, manifest)


def refresh(target: BackupTarget) -> engines.Window | None:
    """Read the window from pgBackRest and keep it on the target; a failure is kept as ``pitr_error``."""
    try:
        window = pgbackrest.window(repository(target), timeout=INFO_TIMEOUT_SECONDS)
    except engines.BackupError as exc:
        message = redact_text(str(exc))[:2000]
        logger.warning("pgbackrest info of %s failed: %s", target.name, message)
        BackupTarget.objects.filter(pk=target.pk).update(pitr_error=message, pitr_checked_at=timezone.now())
        target.pitr_error = message
        return None
    record_window(target, window)
    return window


def record_window(target: BackupTarget, window: engines.Window) -> None:
    values = {
        "pitr_window_start": window.start,
        "pitr_window_end": window.end,
        "pitr_checked_at": timezone.now(),
        "pitr_error": "" if window.start else f"stanza {target.pgbackrest_stanza}: no backup in the repository yet",
    }
    BackupTarget.objects.filter(pk=target.pk).update(**values)
    for name, value in values.items():
        setattr(target, name, value)


def verify(
    verification: Verification, *, record_scratch: Callable[[str], None], record_time: Callable[[datetime], None]
) -> engines.VerifyOutcome:
    """Restore the target's stanza to a random time inside its window, on the earliest day of the recovery
    window not yet verified, into a scratch cluster; check it; stop it. Its directory is left for the
    caller to remove after recording the verdict (``services.verification_run``), or for the janitor.

    A commit is written on the source and archived while pgBackRest copies the files: the time is chosen
    before it, so recovery always finds a commit after the time it stops at.
    """
    from backups.selectors import readiness

    target = verification.backup.target
    repo = repository(target)
    source = _source(target)
    window = pgbackrest.window(repo, timeout=INFO_TIMEOUT_SECONDS)
    if window.start is not None and (window.end is None or window.end - window.start < timedelta(seconds=2)):
        # Just after the first backup nothing was archived past it yet: a commit and a WAL switch now.
        pgbackrest.archive_now(repo, source, timeout=INFO_TIMEOUT_SECONDS)
        window = pgbackrest.window(repo, timeout=INFO_TIMEOUT_SECONDS)
    commit_floor = timezone.now()  # the commit written beside the restore comes after this
    record_window(target, window)
    if window.start is None or window.end is None:
        raise engines.BackupError("nothing to recover to: the repository has no backup or no archived WAL")
    end = min(window.end, commit_floor - timedelta(seconds=1))
    when = pgbackrest.pick_time(window.start, end, missing_days=readiness(target).missing_days)
    record_time(when)
    used = window.info.set_for(when)
    verifier = engines.PitrVerifier(
        repo=repo,
        source=source,
        target_time=when,
        timeout=settings.BACKUP_TIMEOUT_SECONDS,
        on_scratch=record_scratch,
        backup_label=used.label if used else "",
        alongside=lambda: pgbackrest.archive_now(repo, source, timeout=INFO_TIMEOUT_SECONDS),
        leave_directory=True,  # services removes it once the verdict is recorded
    )
    return verifier.run()


def drill(
    backup: Backup,
    *,
    smoke_queries: Sequence[str],
    record_scratch: Callable[[str], None],
    progress: engines.Reporter | None = None,
) -> engines.VerifyOutcome:
    """A restore drill of a pgBackRest target: ``backup``'s set restored, with all the archived WAL after
    it (the latest recoverable point), into a scratch data directory served on a free port; the plan's
    ``smoke_queries`` run there read-only; the server stopped and the directory removed. Only the scratch
    is touched: not the source (nothing is read from it, no commit is written), not the repository (the
    scratch archives nothing). ``outcome.ready_at`` is when the last smoke query answered.
    """
    target = backup.target
    verifier = engines.PitrVerifier(
        repo=repository(target),
        source=_source(target),
        target_time=None,
        timeout=settings.BACKUP_TIMEOUT_SECONDS,
        on_scratch=record_scratch,
        backup_label=str(backup.manifest.get("label") or ""),
        smoke_queries=list(smoke_queries),
        progress=progress or engines.Silent(),
    )
    return verifier.run()


def _source(target: BackupTarget) -> engines.Database:
    source = engines.from_environment(target.url_env)
    if source.engine != "postgresql":
        raise engines.BackupError(f"${target.url_env} must name a PostgreSQL database of the stanza's cluster")
    return source
