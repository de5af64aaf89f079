"""Services of backup copies: each backup's file in each storage its target names (the local one, off-site ones).

Kept apart from ``services`` because a copy has a life of its own: uploaded by a worker after the backup,
read back, retried on failure, pruned per storage. Every write to ``BackupCopy`` is here, and audited.

An upload counts only when the object, read back from the storage, has the backup's size and sha256 (the
stored file's: the ciphertext of an encrypted backup, so no key is needed). A failed attempt deletes what
it may have left under the name and is tried again later, after a delay that doubles with each failure.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import logging
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.files import File
from django.core.files.storage import storages
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from backups import engines
from backups import progress as progress_module
from backups.models import LOCAL_STORAGE, Backup, BackupCopy, BackupStatus, CopyStatus
from backups.progress import Progress
from controlplane.audit import Actor, audit_record, snapshot
from controlplane.redaction import redact_text

logger = logging.getLogger(__name__)
# After this many failed attempts a copy is left failed: the operator sees it, and a new backup gets new copies.
MAX_ATTEMPTS = 10
COPY_FIELDS = ["storage", "name", "status", "size_bytes", "sha256", "attempts", "error"]


class CopyFailed(engines.BackupError):
    """An upload that did not end with a verified copy; the message is safe to show and store."""


def copies_create(*, backup: Backup) -> list[BackupCopy]:
    """The copy rows of a backup that just succeeded, in the caller's transaction: the local file is one
    (verified: its checksum was computed as it was written and synced), each off-site storage a pending one.
    None for a pgBackRest set: it has no file here, its copies are pgBackRest's own repositories."""
    if backup.engine == "pgbackrest":
        return []
    now = timezone.now()
    rows = [
        BackupCopy(
            backup=backup,
            storage=LOCAL_STORAGE,
            name=backup.file,
            status=CopyStatus.VERIFIED,
            size_bytes=backup.size_bytes,
            sha256=backup.sha256,
            verified_at=now,
        )
    ]
    rows += [
        BackupCopy(backup=backup, storage=name, status=CopyStatus.PENDING, next_attempt_at=now)
        for name in backup.target.copy_storages
    ]
    return BackupCopy.objects.bulk_create(rows)


def copies_upload(*, backup: Backup, actor: Actor) -> list[BackupCopy]:
    """Upload every copy of ``backup`` that waits for one now (pending, or failed and due again)."""
    due = BackupCopy.objects.filter(backup=backup).filter(_waiting(timezone.now())).order_by("storage")
    return [copy_upload(copy=copy, actor=actor) for copy in due]


def _waiting(now: datetime) -> Q:
    return Q(status__in=[CopyStatus.PENDING, CopyStatus.FAILED], attempts__lt=MAX_ATTEMPTS) & (
        Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now)
    )


def copies_due(*, now: datetime | None = None) -> list[int]:
    """Ids of the copies waiting for an upload whose time has come (run_due sends them to the worker)."""
    now = now or timezone.now()
    waiting = BackupCopy.objects.filter(_waiting(now), backup__status=BackupStatus.SUCCEEDED)
    return list(waiting.values_list("pk", flat=True))


def copy_upload(*, copy: BackupCopy, actor: Actor) -> BackupCopy:
    """Upload ``copy``'s backup file to its storage and read it back; verified only if size and sha256 match.

    Claimed with a conditional UPDATE (one upload of a copy at a time); a copy another worker holds, or
    one already verified, is returned as it is.
    """
    now = timezone.now()
    claimed = (
        BackupCopy.objects.filter(pk=copy.pk)
        .filter(Q(status__in=[CopyStatus.PENDING, CopyStatus.FAILED]))
        .update(status=CopyStatus.UPLOADING, attempts=F("attempts") + 1, started_at=now, error="")
    )
    copy.refresh_from_db()
    if not claimed:
        return copy
    backup = copy.backup
    start = time.perf_counter()
    progress = Progress(f"copy of backup #{backup.pk} to {copy.storage}", expected_ms=_previous_duration(copy))
    try:
        with _watched(copy, progress):
            name, size, digest = _upload_and_read_back(backup, copy.storage, progress)
    except Exception as exc:  # noqa: BLE001 - every failure is recorded on the copy and tried again later
        if not isinstance(exc, engines.BackupError):
            logger.warning("copy %s of backup %s to %s failed", copy.pk, backup.pk, copy.storage, exc_info=True)
        return _copy_failed(copy, _reason(exc, copy.storage), actor, ms=_ms(start))
    with transaction.atomic():
        copy.status = CopyStatus.VERIFIED
        copy.name, copy.size_bytes, copy.sha256 = name, size, digest
        copy.verified_at = timezone.now()
        copy.duration_ms = _ms(start)
        copy.next_attempt_at = None
        copy.error = ""
        copy.progress = {}
        copy.save()
        audit_record(actor=actor, action="backup.copy", obj=backup, after=snapshot(copy, fields=COPY_FIELDS))
    logger.info("backup %s copied to %s: %s bytes in %s ms, read back", backup.pk, copy.storage, size, copy.duration_ms)
    return copy


def _ms(start: float) -> int:
    return int((time.perf_counter() - start) * 1000)


def _previous_duration(copy: BackupCopy) -> int | None:
    """What the previous verified copy of the same target to the same storage took (ms): the upload's estimate."""
    return (
        BackupCopy.objects.filter(
            backup__target_id=copy.backup.target_id, storage=copy.storage, status=CopyStatus.VERIFIED
        )
        .exclude(pk=copy.pk)
        .exclude(duration_ms__isnull=True)
        .order_by("-verified_at", "-id")
        .values_list("duration_ms", flat=True)
        .first()
    )


@contextlib.contextmanager
def _watched(copy: BackupCopy, progress: Progress) -> Iterator[None]:
    """An upload's progress, current for the code inside (``backups.progress.report``), written into the
    copy's row by the heartbeat's thread (``services._heartbeat``, without a stamp: a copy's worker is judged
    by its start, ``BackupCopy.lost_worker``) and told to this process's watchers (a command's progress line)
    every BACKUP_PROGRESS_SECONDS, and to the watchers once more at the end."""
    from backups.services import _heartbeat

    try:
        with _heartbeat(BackupCopy, copy.pk, CopyStatus.UPLOADING, progress, stamp=False):
            yield
    finally:
        progress_module.tell_watchers(progress, progress.snapshot())


class _CountingFile(io.FileIO):
    """The local file read by a storage's ``save`` (``File.chunks``), telling ``on_bytes`` how far it has read."""

    def __init__(self, path: Path, on_bytes: Callable[[int], None]) -> None:
        super().__init__(path, "rb")
        self.on_bytes = on_bytes

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        with contextlib.suppress(Exception):  # a progress count never breaks the upload
            self.on_bytes(self.tell())
        return data or b""


def _upload_and_read_back(backup: Backup, storage_name: str, progress: Progress) -> tuple[str, int, str]:
    from backups.services import local_copy

    if storage_name not in settings.STORAGES:
        raise CopyFailed(f"no storage named {storage_name!r} is configured (STORAGES)")
    store = storages[storage_name]
    name = backup.file
    with local_copy(backup) as local:
        with contextlib.suppress(Exception):
            if store.exists(name):  # left by an attempt that failed after writing: ours to replace
                store.delete(name)
        phase, total = f"upload {storage_name}", backup.size_bytes or None
        progress.report(phase=phase, done=0, total=total, unit="bytes")

        def sent(done: int) -> None:
            progress.report(phase=phase, done=done)

        try:
            with _CountingFile(local, sent) as handle:
                stored = store.save(name, LocalFile(handle, local, on_bytes=sent))
            back = f"read back from {storage_name}"
            progress.report(phase=back, done=0, total=total, unit="bytes")
            size, digest = _read_back(store, stored, lambda done: progress.report(phase=back, done=done))
        except BaseException:
            with contextlib.suppress(Exception):
                store.delete(name)  # never a half copy under the name (best effort: the server may be gone)
            raise
    if (size, digest) != (backup.size_bytes, backup.sha256):
        with contextlib.suppress(Exception):
            store.delete(stored)
        raise CopyFailed(
            f"read back {size} bytes, sha256 {digest[:16]}… from {storage_name}; the backup is "
            f"{backup.size_bytes} bytes, sha256 {backup.sha256[:16]}…: the copy was deleted"
        )
    return stored, size, digest


class LocalFile(File):
    """A finished local file: a storage that can take it by its path does (``backups.offsite``). Not
    ``temporary_file_path``: FileSystemStorage would move such a file away instead of copying it."""

    def __init__(self, handle: Any, path: Path, *, on_bytes: Callable[[int], None] | None = None) -> None:
        super().__init__(handle, name=path.name)
        self.local_path = str(path)
        self.on_bytes = on_bytes  # told the bytes sent so far by a storage that uploads by path (backups.offsite)


def _read_back(store: Any, name: str, on_bytes: Callable[[int], None]) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with store.open(name, "rb") as handle:
        while chunk := handle.read(engines.CHUNK):
            digest.update(chunk)
            size += len(chunk)
            on_bytes(size)
    return size, digest.hexdigest()


def _reason(exc: BaseException, storage_name: str) -> str:
    """One line for the copy's error: the storage named, the cause in the client's words, no secrets."""
    if isinstance(exc, engines.BackupError):
        return redact_text(str(exc))
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return redact_text(f"uploading to {storage_name} failed: {type(exc).__name__}: {text}"[:1000])


def _copy_failed(copy: BackupCopy, message: str, actor: Actor, *, ms: int | None = None) -> BackupCopy:
    logger.error("copy of backup %s to %s failed: %s", copy.backup_id, copy.storage, message)
    delay = timedelta(minutes=settings.BACKUP_COPY_RETRY_MINUTES) * (2 ** max(copy.attempts - 1, 0))
    with transaction.atomic():
        copy.status = CopyStatus.FAILED
        copy.error = message[:5000]
        copy.progress = {}
        copy.duration_ms = ms
        copy.next_attempt_at = timezone.now() + min(delay, timedelta(days=1))
        copy.save()
        audit_record(
            actor=actor, action="backup.copy_failed", obj=copy.backup, after=snapshot(copy, fields=COPY_FIELDS)
        )
    return copy


def reap_uploads(*, now: datetime) -> int:
    """Fail the uploads whose worker is gone (``BackupCopy.lost_worker``): they are tried again later."""
    reaped = 0
    for copy in BackupCopy.objects.filter(status=CopyStatus.UPLOADING):
        reason = copy.lost_worker(now=now)
        if reason and BackupCopy.objects.filter(pk=copy.pk, status=CopyStatus.UPLOADING).update(
            status=CopyStatus.FAILED
        ):
            copy.refresh_from_db()
            _copy_failed(copy, reason, Actor.system("backups"))
            reaped += 1
    return reaped


# --- Retention, per storage ----------------------------------------------------------------------


def prune_copies(*, backups: list[Backup], actor: Actor) -> int:
    """Delete the copies of ``backups`` (outside their target's retention) storage by storage, except in each
    storage the newest verified copy of the target, whatever its age; a backup left with no copy goes too.

    Returns how many backups went. A copy under way is left for a later round.
    """
    if not backups:
        return 0
    target = backups[0].target
    kept: set[int] = set()
    for storage_name in BackupCopy.objects.filter(backup__target=target).values_list("storage", flat=True).distinct():
        newest = (
            BackupCopy.objects.filter(backup__target=target, storage=storage_name, status=CopyStatus.VERIFIED)
            .order_by("-backup__started_at", "-backup_id")
            .values_list("pk", flat=True)
            .first()
        )
        if newest is not None:
            kept.add(newest)
    gone = 0
    for backup in backups:
        copies = list(backup.copies.all())
        doomed = [c for c in copies if c.pk not in kept and c.status != CopyStatus.UPLOADING]
        with transaction.atomic(durable=True):  # files go after commit
            for copy in doomed:
                audit_record(
                    actor=actor, action="backup.copy_prune", obj=backup, before=snapshot(copy, fields=COPY_FIELDS)
                )
                copy.delete()
                if copy.name:
                    transaction.on_commit(functools.partial(_delete_object, copy.storage, copy.name))
            if len(doomed) == len(copies):
                from backups.services import _backup_state

                audit_record(actor=actor, action="backup.prune", obj=backup, before=_backup_state(backup))
                backup.delete()
                gone += 1
    return gone


def _delete_object(storage_name: str, name: str) -> None:
    try:
        storages[storage_name].delete(name)
    except Exception as exc:  # noqa: BLE001 - an object left behind is logged; the row is gone either way
        logger.error("could not delete backup copy %s from %s: %s", name, storage_name, redact_text(str(exc)))
