"""Every write to backups: targets, taking a backup, verifying it, pruning, restoring. Each is audited."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files import File
from django.core.files.storage import storages
from django.db import DatabaseError, IntegrityError, InterfaceError, OperationalError, connection, transaction
from django.utils import timezone

from backups import copies, engines
from backups import progress as progress_module
from backups.models import (
    LOCAL_STORAGE,
    Backup,
    BackupCopy,
    BackupStatus,
    BackupTarget,
    CopyStatus,
    Drill,
    Verification,
    VerificationResult,
)
from backups.progress import Progress
from controlplane.audit import Actor, audit_record, snapshot
from controlplane.errors import Conflict, InvalidInput
from controlplane.redaction import redact_text

logger = logging.getLogger(__name__)
T = TypeVar("T")
# Tries at recording an outcome on the control plane's database, a new connection each (about 7 s in all).
RECORD_ATTEMPTS = 4
TARGET_FIELDS = (
    "name",
    "url_env",
    "interval_hours",
    "retention_days",
    "retention_count",
    "rpo_hours",
    "recovery_window_days",
    "enabled",
    "copy_storages",
    # pgBackRest targets (kind "pgbackrest"): point-in-time recovery of a cluster whose WAL it archives
    "kind",
    "pgbackrest_stanza",
    "pgbackrest_config",
    "pgbackrest_repo_path",
    "pg_data_dir",
    "pg_port",
    "pg_socket_dir",
    "os_user",
    "full_every_days",
)


class InvalidBackupTarget(InvalidInput):
    """A backup target's settings break a rule; ``field`` names the setting (422)."""


class AlreadyRunning(Conflict):
    """A backup of the target, or a verification of the backup, is already under way (409)."""

    code = "already_running"


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
        if "kind" in changes and changes["kind"] != target.kind and target.backups.exists():
            raise InvalidBackupTarget("kind", f"{target.name} has backups of its kind: add a new target instead")
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
    """Claim the target: a running row, unique per target (a database constraint says so).

    A running row whose worker is gone (no heartbeat for BACKUP_HEARTBEAT_TIMEOUT_SECONDS) is failed
    first, with that reason: the next backup starts now, not when the run's whole timeout has passed.
    """
    for _ in range(2):
        try:
            # Durable: the claim is committed before the dump, and a refused one (IntegrityError) is
            # caught here, which only the outermost transaction can survive.
            with transaction.atomic(durable=True):
                now = timezone.now()
                return Backup.objects.create(
                    target=target, engine="", requested_by=actor.label[:150], started_at=now, heartbeat_at=now
                )
        except IntegrityError:
            running = Backup.objects.filter(target=target, status=BackupStatus.RUNNING).first()
            if running is not None and not _reap_backup(running, now=timezone.now()):
                break
    raise AlreadyRunning(f"a backup of {target.name} is already running")


def backup_create(*, target: BackupTarget, actor: Actor) -> Backup:
    """Take a backup of ``target`` now, in this process. A failure is recorded, audited and alerted on."""
    backup = backup_start(target=target, actor=actor)
    return backup_run(backup=backup, actor=actor)


def backup_run(*, backup: Backup, actor: Actor) -> Backup:
    """Dump the claimed ``backup``'s target and record the outcome, whatever happened to the connections.

    The outcome is recorded on a new connection when the one held died during the dump, and the real
    error (pg_dump's message, the driver's) is what is recorded. The worker's own outcome wins over a
    reaper's guess: a row failed as lost while this worker was cut off gets the real result.
    """
    progress = Progress(f"backup #{backup.pk} of {backup.target.name}", expected_ms=_previous_ms(backup))
    with _heartbeat(Backup, backup.pk, BackupStatus.RUNNING, progress):
        if backup.target.is_pitr:
            from backups import pitr

            outcome = pitr.take_backup(backup)
        else:
            outcome = _dump_and_store(backup, progress)
    if isinstance(outcome, str):
        return _backup_failed(backup, outcome, actor)
    name, result = outcome

    def succeeded() -> Backup:
        now = timezone.now()
        with transaction.atomic():
            backup.status = BackupStatus.SUCCEEDED
            backup.finished_at = now
            backup.duration_ms = int((now - backup.started_at).total_seconds() * 1000)
            backup.file, backup.size_bytes, backup.sha256 = name, result.size_bytes, result.sha256
            backup.encrypted = result.encrypted
            backup.plaintext_sha256, backup.plaintext_size_bytes = result.plaintext_sha256, result.plaintext_size
            backup.tool_versions, backup.manifest = result.tool_versions, result.manifest
            backup.error = ""
            backup.save()
            copies.copies_create(backup=backup)  # the local copy, and one waiting per off-site storage
            audit_record(actor=actor, action="backup.create", obj=backup, after=_backup_state(backup))
        return backup

    _on_live_connection(succeeded, what=f"backup {backup.pk}")
    logger.info(
        "backup %s of %s: %s bytes in %s ms", backup.pk, backup.target.name, backup.size_bytes, backup.duration_ms
    )
    return backup


def _previous(backup: Backup) -> Backup | None:
    """The previous finished backup of the same target: what it took and weighed estimates this one."""
    return (
        Backup.objects.succeeded()
        .filter(target_id=backup.target_id, started_at__lt=backup.started_at)
        .exclude(pk=backup.pk)
        .order_by("-started_at", "-id")
        .only("duration_ms", "size_bytes")
        .first()
    )


def _previous_ms(backup: Backup) -> int | None:
    previous = _previous(backup)
    return previous.duration_ms if previous is not None else None


def _dump_and_store(backup: Backup, progress: Progress) -> tuple[str, engines.Dump] | str:
    """The stored file's name and the dump, or why there is none (redacted, ready to record)."""
    target = backup.target
    stem = f"{target.name}-{backup.started_at:%Y%m%dT%H%M%SZ}-{backup.pk}"
    source: engines.Database | None = None
    try:
        _private_storage_dirs(target.name)
        source = target_source(target)
        backup.engine = source.engine
        # Checked before anything is written: a bad key fails the backup with nothing half-written.
        recipients = engines.parse_recipients(settings.BACKUP_AGE_RECIPIENTS)
        previous = _previous(backup)
        # The previous dump's size is the best guess of this one's: the percentage is an estimate.
        progress.report(phase="dump", done=0, total=previous.size_bytes if previous else None, unit="bytes")
        result, cleanup = engines.dump(
            source,
            stem,
            timeout=settings.BACKUP_TIMEOUT_SECONDS,
            recipients=recipients,
            on_bytes=lambda done: progress.report(done=done),
        )
        progress.report(phase="store", done=result.size_bytes, total=result.size_bytes, unit="bytes")
        try:
            suffix = (".pgdump" if result.engine == "postgresql" else ".sqlite3") + (".age" if result.encrypted else "")
            name = _store(result.path, f"{target.name}/{stem}{suffix}")
        finally:
            cleanup()
    except engines.BackupError as exc:
        return _redacted(str(exc), source)
    except Exception as exc:  # an unexpected fault: still recorded, never left running
        logger.exception("backup %s of %s failed unexpectedly", backup.pk, target.name)
        return _redacted(f"unexpected error: {type(exc).__name__}: {exc}", source)
    return name, result


def _redacted(message: str, source: engines.Database | None) -> str:
    """``message`` without secrets: the configured ones, URL passwords, and the source's own password."""
    if source is not None and len(source.password) >= 4:
        message = message.replace(source.password, "[redacted]")
    return redact_text(message)


# --- The control plane's own connection, and the heartbeat ---------------------------------------


def _on_live_connection(write: Callable[[], T], *, what: str) -> T:
    """Run ``write`` (a transaction of its own) on the control plane's database, on a new connection
    when the one held died during a long dump or restore (a database restart, a network cut, an idle
    timeout). Written on the dead connection, the outcome would be lost and the row left running.

    Inside a caller's transaction nothing can be reconnected: ``write`` runs once, as part of it.
    """
    for attempt in range(1, RECORD_ATTEMPTS + 1):
        if not connection.in_atomic_block and connection.connection is not None and not connection.is_usable():
            connection.close()  # dead since its last use: a new one is opened by the write
        try:
            return write()
        except (InterfaceError, OperationalError) as exc:
            if connection.in_atomic_block or attempt == RECORD_ATTEMPTS:
                raise
            logger.warning(
                "recording %s on the control plane's database failed (%s); trying again on a new connection",
                what,
                redact_text(str(exc).strip()),
            )
            connection.close()
            time.sleep(attempt)
    raise AssertionError("unreachable")  # the last attempt returned or raised


@contextlib.contextmanager
def _heartbeat(
    model: type[Backup] | type[Verification] | type[Drill] | type[BackupCopy],
    pk: int,
    running: str,
    progress: Progress | None = None,
    *,
    stamp: bool = True,
) -> Iterator[None]:
    """While the body runs, a thread stamps the row's ``heartbeat_at`` every BACKUP_HEARTBEAT_SECONDS, on a
    connection of its own: a row whose stamp stops has lost its worker (see ``Backup.lost_worker``).

    With ``progress``, the same thread also writes its snapshot into the row's ``progress``, at most every
    BACKUP_PROGRESS_SECONDS and only when it moved (one UPDATE with the stamp, never one per chunk), and
    shows it to this process's watchers (a command's progress line); the body reports into it through
    ``backups.progress.report``. Without ``stamp`` (an upload: a copy is judged by its start, not a
    heartbeat) only the progress is written.

    Not inside a caller's transaction: the claimed row is not committed, so no other process sees it
    (nor reaps it), and a second connection would wait on this transaction's lock. Watchers are still told.
    """
    outside = not connection.in_atomic_block
    stop = threading.Event()
    beat_every = float(settings.BACKUP_HEARTBEAT_SECONDS)
    tick = min(beat_every, settings.BACKUP_PROGRESS_SECONDS) if progress is not None else beat_every

    def beat() -> None:
        written_version, beaten = -1, time.monotonic()
        try:
            while not stop.wait(tick):
                version = progress.version if progress is not None else -1
                snapshot = progress.snapshot() if progress is not None else None
                if progress is not None and snapshot is not None:
                    progress_module.tell_watchers(progress, snapshot)
                if not outside:
                    continue
                moved = progress is not None and version != written_version
                if not moved and (not stamp or time.monotonic() - beaten < beat_every):
                    continue
                values: dict[str, Any] = {"heartbeat_at": timezone.now()} if stamp else {}
                if progress is not None:
                    values["progress"] = snapshot
                try:
                    model.objects.filter(pk=pk, status=running).update(**values)
                    beaten = time.monotonic()
                    written_version = version
                except DatabaseError as exc:  # cut off for now: the next beat tries on a new connection
                    logger.warning("%s %s: heartbeat failed: %s", model._meta.model_name, pk, redact_text(str(exc)))
                    connection.close()
        finally:
            if outside:
                connection.close()

    if not outside and progress is None:
        yield
        return
    thread = threading.Thread(target=beat, name=f"{model._meta.model_name}-{pk}-heartbeat", daemon=True)
    thread.start()
    try:
        if progress is not None:
            with progress_module.running(progress):
                yield
        else:
            yield
    finally:
        stop.set()
        thread.join(timeout=15)


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
        backup,
        fields=[
            "status",
            "engine",
            "file",
            "size_bytes",
            "sha256",
            "encrypted",
            "plaintext_sha256",
            "duration_ms",
            "tool_versions",
            "error",
        ],
    )


def _backup_failed(backup: Backup, message: str, actor: Actor) -> Backup:
    """Record ``backup`` as failed with ``message``; on a new connection if the held one died."""
    # Logged first: should the control plane's database stay out of reach, the reason is not lost.
    logger.error("backup %s of %s failed: %s", backup.pk, backup.target.name, message)

    def failed() -> Backup:
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
        return backup

    return _on_live_connection(failed, what=f"the failure of backup {backup.pk}")


def _alert_soon() -> None:
    """Tell the listeners of ``backup_failed`` (monitoring evaluates its alert rules) right after the failure
    commits, not at the next scheduled round. Robust: a listener that fails is logged, the failure stays
    recorded."""
    from backups.signals import backup_failed

    transaction.on_commit(lambda: backup_failed.send(sender=Backup), robust=True)


# --- Verification --------------------------------------------------------------------------------


def verification_start(*, backup: Backup, actor: Actor, storage: str = "") -> Verification:
    """Claim a verification of ``backup``, restored from its copy in ``storage`` (the local one by default)."""
    if backup.status != BackupStatus.SUCCEEDED:
        raise engines.BackupError(f"backup #{backup.pk} is {backup.status}: only a finished backup can be verified")
    storage = "" if storage == LOCAL_STORAGE else storage
    if storage:
        _verified_copy(backup, storage)  # refused before anything is claimed
    for _ in range(2):  # a running verification whose worker is gone is failed first, as in backup_start
        try:
            with transaction.atomic(durable=True):  # as in backup_start
                now = timezone.now()
                verification = Verification.objects.create(
                    backup=backup, requested_by=actor.label[:150], started_at=now, heartbeat_at=now, storage=storage
                )
                Backup.objects.filter(pk=backup.pk).update(verification=VerificationResult.RUNNING)
                return verification
        except IntegrityError:
            running = Verification.objects.filter(backup=backup, status=VerificationResult.RUNNING).first()
            if running is not None and not _reap_verification(running, now=timezone.now()):
                break
    raise AlreadyRunning(f"backup #{backup.pk} is already being verified")


def backup_verify(*, backup: Backup, actor: Actor, storage: str = "") -> Verification:
    """Prove ``backup`` restores: checksum, restore into a scratch database, rows, schema, integrity.

    ``storage`` names the copy to restore from: an off-site one is the disaster case (the local disk lost).
    """
    verification = verification_start(backup=backup, actor=actor, storage=storage)
    return verification_run(verification=verification, actor=actor)


def verification_run(*, verification: Verification, actor: Actor) -> Verification:
    """Run the claimed ``verification``; its outcome is recorded as ``backup_run`` records a backup's."""
    backup = verification.backup
    previous = (  # the previous verification of the same target: what it took estimates this one
        Verification.objects.filter(backup__target_id=backup.target_id, status=VerificationResult.PASSED)
        .exclude(pk=verification.pk)
        .order_by("-finished_at")
        .values_list("duration_ms", flat=True)
        .first()
    )
    label = f"verification #{verification.pk} of backup #{backup.pk} ({backup.target.name})"
    progress = Progress(label, expected_ms=previous)
    with _heartbeat(Verification, verification.pk, VerificationResult.RUNNING, progress):
        outcome = _verify(verification, progress)
    verification = _verification_finished(verification, outcome, actor)
    if verification.backup.engine == "pgbackrest" and not verification.scratch_dropped and _drop_scratch(verification):
        # A point-in-time scratch directory is removed once the verdict is known (pitr.verify leaves it);
        # if this process dies first, the janitor (reap_stale) removes it.
        _on_live_connection(
            lambda: Verification.objects.filter(pk=verification.pk).update(scratch_dropped=True),
            what=f"the scratch of verification {verification.pk}",
        )
        verification.scratch_dropped = True
    return verification


def _verify(verification: Verification, progress: Progress | None = None) -> engines.VerifyOutcome:
    backup = verification.backup
    if backup.target.is_pitr:
        return _verify_pitr(verification)
    try:
        verifier = _dump_verifier(
            backup,
            label=f"{backup.target.name}_{backup.pk}",
            record_scratch=lambda name: Verification.objects.filter(pk=verification.pk).update(scratch=name),
            progress=progress,
        )
        identities = decryption_identities(backup)  # before the download: a missing key fails at once
        outcome = _dump_verifier_run(verifier, backup, identities=identities, storage=verification.storage)
    except engines.BackupError as exc:
        outcome = engines.VerifyOutcome(checks=[engines.CheckResult("setup", "fail", str(exc), 0)])
    except Exception as exc:  # never leave a verification running
        logger.exception("verification %s failed unexpectedly", verification.pk)
        outcome = engines.VerifyOutcome(
            checks=[engines.CheckResult("setup", "fail", f"unexpected error: {type(exc).__name__}: {exc}", 0)]
        )
    return outcome


def _dump_verifier(
    backup: Backup,
    *,
    label: str,
    record_scratch: Callable[[str], object],
    progress: Progress | None,
    smoke_queries: Sequence[str] | None = None,
) -> engines.Verifier:
    """The ``engines.Verifier`` of a dump ``backup`` (a verification's, a drill's): its scratch on
    BACKUP_SCRATCH_DATABASE_URL for a PostgreSQL dump when set, else on the source's server, with the
    verifier's guards (never the source, never the control plane's database). ``record_scratch`` stores the
    scratch's name before the scratch is made (on a live connection), so a janitor can always drop it."""
    scratch_server = (
        engines.from_url(settings.BACKUP_SCRATCH_DATABASE_URL, variable="BACKUP_SCRATCH_DATABASE_URL")
        if settings.BACKUP_SCRATCH_DATABASE_URL and backup.engine == "postgresql"
        else None
    )

    def on_scratch(name: str) -> None:
        _on_live_connection(lambda: record_scratch(name), what=f"the scratch database {name} ({label})")

    return engines.Verifier(
        engine=backup.engine,
        source=target_source(backup.target),
        scratch_server=scratch_server,
        manifest=backup.manifest,
        label=label,
        timeout=settings.BACKUP_TIMEOUT_SECONDS,
        on_scratch=on_scratch,
        control_plane=control_plane_database(),
        smoke_queries=smoke_queries,
        progress=progress,
    )


def _dump_verifier_run(
    verifier: engines.Verifier, backup: Backup, *, identities: list[engines.AgeIdentity] | None, storage: str = ""
) -> engines.VerifyOutcome:
    """Fetch ``backup``'s file (from ``storage``, the local one by default) and run ``verifier`` on it
    against what the backup recorded: stored size and sha256, and the plaintext's of an encrypted one."""
    with local_copy(backup, storage=storage) as local:
        return verifier.run(
            local,
            expected_sha256=backup.sha256,
            expected_size=backup.size_bytes or 0,
            identities=identities,
            plaintext_sha256=backup.plaintext_sha256,
            plaintext_size=backup.plaintext_size_bytes,
        )


def _verify_pitr(verification: Verification) -> engines.VerifyOutcome:
    """A pgBackRest target's verification: a point-in-time restore (``backups.pitr.verify``)."""
    from backups import pitr

    def record(**values: Any) -> None:
        _on_live_connection(
            lambda: Verification.objects.filter(pk=verification.pk).update(**values),
            what=f"the scratch of verification {verification.pk}",
        )

    try:
        return pitr.verify(
            verification,
            record_scratch=lambda path: record(scratch=path),
            record_time=lambda when: record(target_time=when),
        )
    except engines.BackupError as exc:
        return engines.VerifyOutcome(checks=[engines.CheckResult("setup", "fail", str(exc), 0)])
    except Exception as exc:  # never leave a verification running
        logger.exception("verification %s failed unexpectedly", verification.pk)
        return engines.VerifyOutcome(
            checks=[engines.CheckResult("setup", "fail", f"unexpected error: {type(exc).__name__}: {exc}", 0)]
        )


def decryption_identities(backup: Backup) -> list[engines.AgeIdentity] | None:
    """The age identities that decrypt ``backup`` (from BACKUP_AGE_IDENTITY_FILE), None when it is not encrypted."""
    if not backup.encrypted:
        return None
    return engines.read_identities(settings.BACKUP_AGE_IDENTITY_FILE)


def stored_dump(backup: Backup, local: Path) -> engines.StoredDump:
    return engines.StoredDump(
        local, decryption_identities(backup), backup.plaintext_sha256, backup.plaintext_size_bytes
    )


def _verified_copy(backup: Backup, storage_name: str) -> BackupCopy:
    copy = BackupCopy.objects.filter(backup=backup, storage=storage_name).first()
    if copy is None:
        raise engines.BackupError(f"backup #{backup.pk} has no copy in the storage {storage_name!r}")
    if copy.status != CopyStatus.VERIFIED:
        raise engines.BackupError(
            f"the copy of backup #{backup.pk} in {storage_name} is {copy.get_status_display()}, not verified"
        )
    return copy


@contextlib.contextmanager
def local_copy(backup: Backup, *, storage: str = "") -> Iterator[Path]:
    """The backup's file as a local path: the stored file itself on a local disk, else a temporary copy
    (as stored: the ciphertext of an encrypted backup). ``storage`` names the copy to read, by default the
    local backups storage."""
    if storage and storage != LOCAL_STORAGE:
        copy = _verified_copy(backup, storage)
        store, name, where = storages[storage], copy.name, f"the storage {storage}"
    else:
        store, name, where = storages[LOCAL_STORAGE], backup.file, "the backups storage"
    try:
        present = bool(name) and store.exists(name)
    except Exception as exc:  # noqa: BLE001 - a remote storage that does not answer
        raise engines.BackupError(f"{where} cannot be read: {type(exc).__name__}: {redact_text(str(exc))}") from None
    if not present:
        raise engines.BackupError(f"the backup file {name or '(none)'} is missing from {where}")
    try:
        yield Path(store.path(name))
        return
    except NotImplementedError:
        pass
    with tempfile.NamedTemporaryFile(dir=engines.partial_dir(), suffix=".download") as handle:
        with store.open(name, "rb") as source:
            for chunk in iter(lambda: source.read(engines.CHUNK), b""):
                handle.write(chunk)
        handle.flush()
        yield Path(handle.name)


def _verification_finished(verification: Verification, outcome: engines.VerifyOutcome, actor: Actor) -> Verification:
    """Record ``outcome`` (redacted), on a new connection if the held one died during the restore."""
    failed = outcome.failed
    checks = [{**check.as_dict(), "detail": redact_text(check.detail)} for check in outcome.checks]
    error = redact_text(failed.detail)[:5000] if failed else ""
    if failed:
        logger.error("verification of backup %s failed at %s: %s", verification.backup_id, failed.name, error)

    def finished() -> Verification:
        now = timezone.now()
        with transaction.atomic():
            verification.refresh_from_db(fields=["scratch", "target_time"])
            verification.status = VerificationResult.FAILED if failed else VerificationResult.PASSED
            verification.finished_at = now
            verification.duration_ms = int((now - verification.started_at).total_seconds() * 1000)
            verification.restore_ms = outcome.restore_ms
            verification.checks = checks
            verification.failed_check = failed.name if failed else ""
            verification.error = error
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
        return verification

    return _on_live_connection(finished, what=f"the outcome of verification {verification.pk}")


# --- Faults: runs a dead worker left behind ------------------------------------------------------


def reap_stale(*, now: Any = None) -> int:
    """Fail the backups and verifications whose worker is gone (``lost_worker``); drop scratch they left.

    A worker killed mid-run, or cut from this database for good, leaves a running row (and maybe a
    scratch database); without this the target could not be backed up again (one running backup per
    target). A scratch a finished verification could not drop then is dropped now.
    """
    now = now or timezone.now()
    reaped = 0
    for backup in Backup.objects.filter(status=BackupStatus.RUNNING).select_related("target"):
        reaped += _reap_backup(backup, now=now)
    for verification in Verification.objects.filter(status=VerificationResult.RUNNING).select_related("backup__target"):
        reaped += _reap_verification(verification, now=now)
    reaped += copies.reap_uploads(now=now)
    left = Verification.objects.exclude(status=VerificationResult.RUNNING).exclude(scratch="")
    for verification in left.filter(scratch_dropped=False).select_related("backup__target"):
        if _drop_scratch(verification):
            Verification.objects.filter(pk=verification.pk).update(scratch_dropped=True)
    return reaped


def _reap_backup(backup: Backup, *, now: datetime) -> bool:
    """Fail ``backup`` with the reason its worker is gone; False (nothing done) while it may still run."""
    with transaction.atomic():
        # Read again under the row's lock: its worker may have beaten or finished since it was listed.
        current = Backup.objects.select_for_update().filter(pk=backup.pk).first()
        reason = current.lost_worker(now=now) if current is not None else ""
        if reason:
            backup.refresh_from_db()
            _backup_failed(backup, reason, Actor.system("backups"))
    if reason:
        for leftover in engines.partial_dir().glob(f"{backup.target.name}-*-{backup.pk}.*"):
            leftover.unlink(missing_ok=True)  # a dump the lost worker was writing
    return bool(reason)


def _reap_verification(verification: Verification, *, now: datetime) -> bool:
    """Fail ``verification`` as ``_reap_backup`` does a backup, dropping its scratch database first."""
    reason = verification.lost_worker(now=now)
    if not reason:
        return False
    dropped = _drop_scratch(verification)
    outcome = engines.VerifyOutcome(checks=[engines.CheckResult("setup", "fail", reason, 0)], scratch_dropped=dropped)
    with transaction.atomic():
        current = Verification.objects.select_for_update().filter(pk=verification.pk).first()
        if current is None or not current.lost_worker(now=now):
            return False  # its worker beat or finished meanwhile
        _verification_finished(verification, outcome, Actor.system("backups"))
    return True


def _drop_scratch(verification: Verification) -> bool:
    if not verification.scratch:
        return True
    if verification.backup.engine == "pgbackrest":
        try:
            return engines.remove_scratch(verification.scratch)
        except engines.BackupError as exc:
            logger.error("could not remove scratch directory %s: %s", verification.scratch, exc)
            return False
    return drop_dump_scratch(
        verification.backup.target,
        verification.scratch,
        sqlite=verification.backup.engine != "postgresql",
        what=f"of verification {verification.pk}",
    )


def drop_dump_scratch(target: BackupTarget, name: str, *, sqlite: bool, what: str) -> bool:
    """Drop the scratch database ``name`` a dump's restore (a verification's or a drill's) made: on
    BACKUP_SCRATCH_DATABASE_URL, else the target's server; a SQLite scratch is files in the partial folder.
    False (logged) when it could not be dropped: the janitor tries again."""
    try:
        if not sqlite:
            server = (
                engines.from_url(settings.BACKUP_SCRATCH_DATABASE_URL, variable="BACKUP_SCRATCH_DATABASE_URL")
                if settings.BACKUP_SCRATCH_DATABASE_URL
                else target_source(target).with_name("postgres")
            )
            engines.drop_database(server, name)
        else:
            for suffix in ("", "-journal", "-wal", "-shm"):
                Path(engines.partial_dir(), name + suffix).unlink(missing_ok=True)
    except engines.BackupError as exc:
        logger.error("could not drop scratch database %s %s: %s", name, what, exc)
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
    """Delete what ``target``'s retention no longer keeps. Backups with copies are pruned storage by storage
    (``copies.prune_copies``: never the newest verified copy in a storage); older ones, file and row at once."""
    doomed = prunable(target, now=now)
    with_copies = [backup for backup in doomed if backup.copies.exists()]
    pruned = copies.prune_copies(backups=with_copies, actor=actor)
    doomed = [backup for backup in doomed if backup not in with_copies]
    store = storage()
    for backup in doomed:
        with transaction.atomic(durable=True):  # the file goes after commit
            audit_record(actor=actor, action="backup.prune", obj=backup, before=_backup_state(backup))
            name = backup.file
            backup.delete()
            if name:
                transaction.on_commit(functools.partial(_delete_file, store, name))
    return pruned + len(doomed)


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
    if backup.engine == "pgbackrest":
        raise engines.BackupError(
            f"backup #{backup.pk} is a pgBackRest set: restore the cluster with pgbackrest restore "
            "(--type=time for a point in time), which replaces a data directory, not a database"
        )
    into = engines.from_url(into_url, variable="--into")
    if into.engine != backup.engine:
        raise engines.BackupError(f"a {backup.engine} backup cannot be restored into {into.label}")
    overwrites_source = _refuse_protected_into(into, backup, overwrite_source=overwrite_source)
    decryption_identities(backup)  # a missing or wrong identity file is said before anything is read
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
            ms = engines.restore(
                stored_dump(backup, local), backup.engine, into, timeout=settings.BACKUP_TIMEOUT_SECONDS
            )
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

    # Durable: the task is sent after commit, and the answer below is read once it was.
    with transaction.atomic(durable=True):
        audit_record(actor=actor, action="backup.requested", obj=target)
        queue_backup(target.pk, requested_by=actor.label)
    target.refresh_from_db(fields=["dispatch_error", "dispatch_requested_by"])
    return not target.dispatch_error


def verification_request(*, backup: Backup, actor: Actor) -> bool:
    """Queue a verification of ``backup`` for the worker; False as ``backup_request``, recorded on the backup."""
    from backups.tasks import queue_verification

    if backup.status != BackupStatus.SUCCEEDED:
        raise engines.BackupError(f"backup #{backup.pk} is {backup.status}: only a finished backup can be verified")
    with transaction.atomic(durable=True):  # as in backup_request
        audit_record(actor=actor, action="backup.verify_requested", obj=backup)
        queue_verification(backup.pk, requested_by=actor.label)
    backup.refresh_from_db(fields=["verify_dispatch_error", "verify_requested_by"])
    return not backup.verify_dispatch_error


NOT_SENT = "the broker could not be reached; it is sent to the worker when the broker answers"
