"""Every write to backups: targets, taking a backup, verifying it, pruning, restoring. Each is audited."""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files import File
from django.core.files.storage import storages
from django.db import IntegrityError, transaction
from django.utils import timezone

from backups import engines
from backups.models import Backup, BackupStatus, BackupTarget, Verification, VerificationResult
from controlplane.audit import Actor, audit_record, snapshot

logger = logging.getLogger(__name__)
TARGET_FIELDS = (
    "name",
    "url_env",
    "interval_hours",
    "retention_days",
    "retention_count",
    "rpo_hours",
    "recovery_window_days",
    "enabled",
)


class InvalidBackupTarget(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class AlreadyRunning(RuntimeError):
    pass


def storage() -> Any:
    return storages["backups"]


# --- Targets -------------------------------------------------------------------------------------


def _validate_target(target: BackupTarget) -> None:
    try:
        target.full_clean(validate_unique=True)
    except ValidationError as exc:
        field, messages = next(iter(exc.message_dict.items()))
        raise InvalidBackupTarget(field, messages[0]) from None


def target_create(*, data: dict[str, Any], actor: Actor) -> BackupTarget:
    """Add a backup target; its URL variable is checked when it is backed up (it may be set later)."""
    unknown = sorted(set(data) - set(TARGET_FIELDS))
    if unknown:
        raise InvalidBackupTarget(unknown[0], "unknown field")
    target = BackupTarget(**data)
    _validate_target(target)
    with transaction.atomic():
        target.save()
        audit_record(actor=actor, action="backup_target.create", obj=target, after=snapshot(target))
    return target


def target_update(*, target: BackupTarget, changes: dict[str, Any], actor: Actor) -> BackupTarget:
    unknown = sorted(set(changes) - set(TARGET_FIELDS))
    if unknown:
        raise InvalidBackupTarget(unknown[0], "unknown field")
    with transaction.atomic():
        target = BackupTarget.objects.select_for_update().get(pk=target.pk)
        before = snapshot(target)
        for name, value in changes.items():
            setattr(target, name, value)
        _validate_target(target)
        target.save()
        audit_record(actor=actor, action="backup_target.update", obj=target, before=before, after=snapshot(target))
    return target


def target_source(target: BackupTarget) -> engines.Database:
    if target.url_env:
        return engines.from_environment(target.url_env)
    return engines.from_settings(settings.DATABASES["default"])


def control_plane_database() -> engines.Database | None:
    """The control plane's own database: never a scratch, never restored into from another database's backup.

    None only for an in-memory SQLite database (a test configuration), which no file or URL can reach.
    """
    own = settings.DATABASES["default"]
    name = str(own.get("NAME") or "")
    if own.get("ENGINE") == engines.SQLITE_ENGINE and (not name or name == ":memory:" or name.startswith("file:")):
        return None
    return engines.from_settings(own)


# --- Taking a backup -----------------------------------------------------------------------------


def backup_start(*, target: BackupTarget, actor: Actor) -> Backup:
    """Claim the target: a running row, unique per target (a database constraint says so)."""
    try:
        with transaction.atomic():
            return Backup.objects.create(target=target, engine="", requested_by=actor.label[:150])
    except IntegrityError:
        raise AlreadyRunning(f"a backup of {target.name} is already running") from None


def backup_create(*, target: BackupTarget, actor: Actor) -> Backup:
    """Take a backup of ``target`` now, in this process. A failure is recorded, audited and alerted on."""
    backup = backup_start(target=target, actor=actor)
    return backup_run(backup=backup, actor=actor)


def backup_run(*, backup: Backup, actor: Actor) -> Backup:
    target = backup.target
    stem = f"{target.name}-{backup.started_at:%Y%m%dT%H%M%SZ}-{backup.pk}"
    try:
        _private_storage_dirs(target.name)
        source = target_source(target)
        backup.engine = source.engine
        result, cleanup = engines.dump(source, stem, timeout=settings.BACKUP_TIMEOUT_SECONDS)
        try:
            suffix = ".pgdump" if result.engine == "postgresql" else ".sqlite3"
            name = _store(result.path, f"{target.name}/{stem}{suffix}")
        finally:
            cleanup()
    except engines.BackupError as exc:
        return _backup_failed(backup, str(exc), actor)
    except Exception as exc:  # an unexpected fault: still recorded, never left running
        logger.exception("backup %s of %s failed unexpectedly", backup.pk, target.name)
        return _backup_failed(backup, f"unexpected error: {type(exc).__name__}: {exc}", actor)
    now = timezone.now()
    with transaction.atomic():
        backup.status = BackupStatus.SUCCEEDED
        backup.finished_at = now
        backup.duration_ms = int((now - backup.started_at).total_seconds() * 1000)
        backup.file, backup.size_bytes, backup.sha256 = name, result.size_bytes, result.sha256
        backup.tool_versions, backup.manifest = result.tool_versions, result.manifest
        backup.save()
        audit_record(actor=actor, action="backup.create", obj=backup, after=_backup_state(backup))
    logger.info("backup %s of %s: %s bytes in %s ms", backup.pk, target.name, backup.size_bytes, backup.duration_ms)
    return backup


def _private_storage_dirs(folder: str) -> None:
    """The backups folder and its sub-folder ``folder``: 0700, before a dump is written below them.

    The storage makes new folders 0700 itself; this narrows ones an older release or an operator left
    open. A remote storage has no folders here to narrow.
    """
    store = storage()
    try:
        path = Path(store.path(folder))
    except NotImplementedError:
        return
    engines.private_dir(Path(store.path("")))
    engines.private_dir(path)


def _store(local: Path, name: str) -> str:
    """Hand a finished local file to the backups storage. On a local disk this is a rename."""

    class _Finished(File):
        def temporary_file_path(self) -> str:  # FileSystemStorage moves such a file instead of copying it
            return str(local)

    store = storage()
    existed = store.exists(name)
    try:
        with open(local, "rb") as handle:
            return store.save(name, _Finished(handle, name=os.path.basename(name)))
    except Exception as exc:
        # Across file systems (or to a remote storage) the save is a copy: one cut short by a full disk
        # must not stay under the final name, where it would look like a complete backup.
        if not existed:
            with contextlib.suppress(Exception):
                store.delete(name)
        if isinstance(exc, OSError):
            raise engines.BackupError(
                f"storing the dump failed: {exc.strerror or exc}; no backup file was kept"
            ) from None
        raise


def _backup_state(backup: Backup) -> dict[str, Any]:
    return snapshot(
        backup, fields=["status", "engine", "file", "size_bytes", "sha256", "duration_ms", "tool_versions", "error"]
    )


def _backup_failed(backup: Backup, message: str, actor: Actor) -> Backup:
    now = timezone.now()
    with transaction.atomic():
        backup.status = BackupStatus.FAILED
        backup.finished_at = now
        backup.duration_ms = int((now - backup.started_at).total_seconds() * 1000)
        backup.error = message[:5000]
        backup.file = ""
        backup.save()
        audit_record(actor=actor, action="backup.failed", obj=backup, after=_backup_state(backup))
        _alert_soon()
    logger.error("backup %s of %s failed: %s", backup.pk, backup.target.name, message)
    return backup


def _alert_soon() -> None:
    """Tell the listeners of ``backup_failed`` (monitoring evaluates its alert rules) right after the failure
    commits, not at the next scheduled round. Robust: a listener that fails is logged, the failure stays
    recorded."""
    from backups.signals import backup_failed

    transaction.on_commit(lambda: backup_failed.send(sender=Backup), robust=True)


# --- Verification --------------------------------------------------------------------------------


def verification_start(*, backup: Backup, actor: Actor) -> Verification:
    if backup.status != BackupStatus.SUCCEEDED:
        raise engines.BackupError(f"backup #{backup.pk} is {backup.status}: only a finished backup can be verified")
    try:
        with transaction.atomic():
            verification = Verification.objects.create(backup=backup, requested_by=actor.label[:150])
            Backup.objects.filter(pk=backup.pk).update(verification=VerificationResult.RUNNING)
    except IntegrityError:
        raise AlreadyRunning(f"backup #{backup.pk} is already being verified") from None
    return verification


def backup_verify(*, backup: Backup, actor: Actor) -> Verification:
    """Prove ``backup`` restores: checksum, restore into a scratch database, rows, schema, integrity."""
    verification = verification_start(backup=backup, actor=actor)
    return verification_run(verification=verification, actor=actor)


def verification_run(*, verification: Verification, actor: Actor) -> Verification:
    backup = verification.backup
    try:
        source = target_source(backup.target)
        scratch_server = (
            engines.from_url(settings.BACKUP_SCRATCH_DATABASE_URL, variable="BACKUP_SCRATCH_DATABASE_URL")
            if settings.BACKUP_SCRATCH_DATABASE_URL and backup.engine == "postgresql"
            else None
        )

        def on_scratch(name: str) -> None:
            Verification.objects.filter(pk=verification.pk).update(scratch=name)

        verifier = engines.Verifier(
            engine=backup.engine,
            source=source,
            scratch_server=scratch_server,
            manifest=backup.manifest,
            label=f"{backup.target.name}_{backup.pk}",
            timeout=settings.BACKUP_TIMEOUT_SECONDS,
            on_scratch=on_scratch,
            control_plane=control_plane_database(),
        )
        with local_copy(backup) as local:
            outcome = verifier.run(local, expected_sha256=backup.sha256, expected_size=backup.size_bytes or 0)
    except engines.BackupError as exc:
        outcome = engines.VerifyOutcome(checks=[engines.CheckResult("setup", "fail", str(exc), 0)])
    except Exception as exc:  # never leave a verification running
        logger.exception("verification %s failed unexpectedly", verification.pk)
        outcome = engines.VerifyOutcome(
            checks=[engines.CheckResult("setup", "fail", f"unexpected error: {type(exc).__name__}: {exc}", 0)]
        )
    return _verification_finished(verification, outcome, actor)


@contextlib.contextmanager
def local_copy(backup: Backup) -> Iterator[Path]:
    """The backup's file as a local path: the stored file itself on a local disk, else a temporary copy."""
    store = storage()
    if not backup.file or not store.exists(backup.file):
        raise engines.BackupError(f"the backup file {backup.file or '(none)'} is missing from the backups storage")
    try:
        yield Path(store.path(backup.file))
        return
    except NotImplementedError:
        pass
    with tempfile.NamedTemporaryFile(dir=engines.partial_dir(), suffix=".download") as handle:
        with store.open(backup.file, "rb") as source:
            for chunk in iter(lambda: source.read(engines.CHUNK), b""):
                handle.write(chunk)
        handle.flush()
        yield Path(handle.name)


def _verification_finished(verification: Verification, outcome: engines.VerifyOutcome, actor: Actor) -> Verification:
    now = timezone.now()
    failed = outcome.failed
    with transaction.atomic():
        verification.refresh_from_db(fields=["scratch"])
        verification.status = VerificationResult.FAILED if failed else VerificationResult.PASSED
        verification.finished_at = now
        verification.duration_ms = int((now - verification.started_at).total_seconds() * 1000)
        verification.restore_ms = outcome.restore_ms
        verification.checks = [check.as_dict() for check in outcome.checks]
        verification.failed_check = failed.name if failed else ""
        verification.error = failed.detail[:5000] if failed else ""
        verification.scratch_dropped = outcome.scratch_dropped or not verification.scratch
        verification.save()
        Backup.objects.filter(pk=verification.backup_id).update(verification=verification.status, verified_at=now)
        after = snapshot(verification, fields=["status", "failed_check", "error", "restore_ms", "duration_ms"])
        audit_record(
            actor=actor,
            action="backup.verify" if not failed else "backup.verify_failed",
            obj=verification.backup,
            after=after,
        )
        if failed:
            _alert_soon()
    if failed:
        logger.error("verification of backup %s failed at %s: %s", verification.backup_id, failed.name, failed.detail)
    return verification


# --- Faults: runs a dead worker left behind ------------------------------------------------------


def reap_stale(*, now: Any = None) -> int:
    """Mark backups and verifications that outlived the timeout as failed; drop scratch they left.

    A worker killed mid-run leaves a running row (and maybe a scratch database); without this the
    target could never be backed up again (one running backup per target).
    """
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=settings.BACKUP_TIMEOUT_SECONDS + 60)
    reaped = 0
    actor = Actor.system("backups")
    for backup in Backup.objects.filter(status=BackupStatus.RUNNING, started_at__lt=cutoff).select_related("target"):
        for leftover in engines.partial_dir().glob(f"{backup.target.name}-*-{backup.pk}.*"):
            leftover.unlink(missing_ok=True)  # a dump the lost worker was writing
        _backup_failed(backup, "did not finish in time: the worker was lost or the run hung", actor)
        reaped += 1
    stale = Verification.objects.filter(status=VerificationResult.RUNNING, started_at__lt=cutoff)
    for verification in stale.select_related("backup__target"):
        dropped = _drop_scratch(verification)
        outcome = engines.VerifyOutcome(
            checks=[
                engines.CheckResult("setup", "fail", "did not finish in time: the worker was lost or the run hung", 0)
            ],
            scratch_dropped=dropped,
        )
        _verification_finished(verification, outcome, actor)
        reaped += 1
    return reaped


def _drop_scratch(verification: Verification) -> bool:
    if not verification.scratch:
        return True
    try:
        if verification.backup.engine == "postgresql":
            server = (
                engines.from_url(settings.BACKUP_SCRATCH_DATABASE_URL, variable="BACKUP_SCRATCH_DATABASE_URL")
                if settings.BACKUP_SCRATCH_DATABASE_URL
                else target_source(verification.backup.target).with_name("postgres")
            )
            engines.drop_database(server, verification.scratch)
        else:
            for suffix in ("", "-journal", "-wal", "-shm"):
                Path(engines.partial_dir(), verification.scratch + suffix).unlink(missing_ok=True)
    except engines.BackupError as exc:
        logger.error("could not drop scratch database %s: %s", verification.scratch, exc)
        return False
    return True


# --- Retention -----------------------------------------------------------------------------------


def prunable(target: BackupTarget, *, now: Any = None) -> list[Backup]:
    """Backups outside every retention rule of ``target``. Never the newest verified one, never a running one."""
    now = now or timezone.now()
    if not target.retention_days and not target.retention_count:
        return []
    newest_verified = target.backups.verified().order_by("-started_at", "-id").values_list("pk", flat=True).first()
    finished = list(target.backups.exclude(status=BackupStatus.RUNNING).order_by("-started_at", "-id"))
    kept_by_count = {b.pk for b in finished[: target.retention_count]} if target.retention_count else set()
    cutoff = now - timedelta(days=target.retention_days) if target.retention_days else None
    doomed = []
    for backup in finished:
        if backup.pk == newest_verified or backup.pk in kept_by_count:
            continue
        if cutoff is not None and backup.started_at >= cutoff:
            continue
        if backup.verification == VerificationResult.RUNNING:
            continue
        doomed.append(backup)
    return doomed


def backups_prune(*, target: BackupTarget, actor: Actor, now: Any = None) -> int:
    doomed = prunable(target, now=now)
    store = storage()
    for backup in doomed:
        with transaction.atomic():
            audit_record(actor=actor, action="backup.prune", obj=backup, before=_backup_state(backup))
            name = backup.file
            backup.delete()
            if name:
                transaction.on_commit(lambda name=name: _delete_file(store, name))
    return len(doomed)


def _delete_file(store: Any, name: str) -> None:
    try:
        store.delete(name)
    except OSError as exc:
        logger.error("could not delete backup file %s: %s", name, exc)


# --- Restore -------------------------------------------------------------------------------------


def backup_restore(*, backup: Backup, into_url: str, overwrite_source: bool, actor: Actor) -> int:
    """Restore ``backup`` into the database at ``into_url``, replacing its content. Returns milliseconds.

    The checksum is verified first. The backed-up database itself is refused unless the operator
    says ``overwrite_source``; the control plane's own database is refused unless it is the one backed
    up. Both are recognised by identity, not by URL. Audited before it starts (so an interrupted restore
    is on record) and after.
    """
    if backup.status != BackupStatus.SUCCEEDED:
        raise engines.BackupError(f"backup #{backup.pk} is {backup.status}: nothing to restore")
    into = engines.from_url(into_url, variable="--into")
    if into.engine != backup.engine:
        raise engines.BackupError(f"a {backup.engine} backup cannot be restored into {into.label}")
    overwrites_source = _refuse_protected_into(into, backup, overwrite_source=overwrite_source)
    with local_copy(backup) as local:
        digest, size = engines.file_digest(local)
        if digest != backup.sha256 or size != backup.size_bytes:
            raise engines.BackupError("checksum: the file does not match its recorded checksum (altered or truncated)")
        audit_record(
            actor=actor,
            action="backup.restore_started",
            obj=backup,
            after={"into": into.label, "overwrites_source": overwrites_source},
        )
        try:
            ms = engines.restore(local, backup.engine, into, timeout=settings.BACKUP_TIMEOUT_SECONDS)
        except engines.BackupError as exc:
            audit_record(
                actor=actor, action="backup.restore_failed", obj=backup, after={"into": into.label, "error": str(exc)}
            )
            raise
    audit_record(actor=actor, action="backup.restore", obj=backup, after={"into": into.label, "ms": ms})
    return ms


def _refuse_protected_into(into: engines.Database, backup: Backup, *, overwrite_source: bool) -> bool:
    """Refuse a restore into the backed-up database (unless ``overwrite_source``) or into the control
    plane's own database (unless that is the one backed up). Returns whether ``into`` is the source.

    A source that does not answer cannot be told apart from ``into``: that takes ``overwrite_source`` too.
    """
    into_id = engines.identity(into)  # a PostgreSQL database that does not answer cannot be restored into
    if into_id is None:
        return False  # a SQLite file not there yet is no existing database
    try:
        source = target_source(backup.target)
    except engines.BackupError:
        source = None  # the target's variable is gone: it names no database to protect
    source_id, unknown = None, ""
    if source is not None:
        try:
            source_id = engines.identity(source)
        except engines.BackupError as exc:
            unknown = str(exc)
    own = control_plane_database()
    if own is not None and engines.identity(own) == into_id and (unknown or source_id != into_id):
        raise engines.ScratchIsSource(
            f"refusing to restore into the control plane's own database ({into.label}): "
            f"the backup is of {backup.target.source_label}"
        )
    if source_id == into_id and not overwrite_source:
        raise engines.ScratchIsSource(
            f"refusing to restore into the backed-up database itself ({into.label}); "
            "pass --i-know-this-overwrites to replace it"
        )
    if unknown and not overwrite_source:
        raise engines.ScratchIsSource(
            f"refusing to restore into {into.label}: it may be the backed-up database, which cannot be "
            f"identified ({unknown}); pass --i-know-this-overwrites if it may be replaced"
        )
    return source_id == into_id


# --- Requests from operators: audited now, run by the worker -------------------------------------


def backup_request(*, target: BackupTarget, actor: Actor) -> bool:
    """Queue a backup of ``target`` for the worker (admin action, page button).

    False when the broker did not take the task: the request is recorded on the target and the
    periodic run_due sends it again once the broker answers.
    """
    from backups.tasks import queue_backup

    with transaction.atomic():
        audit_record(actor=actor, action="backup.requested", obj=target)
        queue_backup(target.pk, requested_by=actor.label)
    target.refresh_from_db(fields=["dispatch_error", "dispatch_requested_by"])
    return not target.dispatch_error


def verification_request(*, backup: Backup, actor: Actor) -> bool:
    """Queue a verification of ``backup`` for the worker; False as ``backup_request``, recorded on the backup."""
    from backups.tasks import queue_verification

    if backup.status != BackupStatus.SUCCEEDED:
        raise engines.BackupError(f"backup #{backup.pk} is {backup.status}: only a finished backup can be verified")
    with transaction.atomic():
        audit_record(actor=actor, action="backup.verify_requested", obj=backup)
        queue_verification(backup.pk, requested_by=actor.label)
    backup.refresh_from_db(fields=["verify_dispatch_error", "verify_requested_by"])
    return not backup.verify_dispatch_error


NOT_SENT = "the broker could not be reached; it is sent to the worker when the broker answers"
