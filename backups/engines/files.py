"""Local files of backups: private directories, dumps written under a temporary name and hashed as they go."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import secrets
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from django.conf import settings

from backups.engines.errors import BackupError

logger = logging.getLogger(__name__)
CHUNK = 1024 * 1024


@dataclass
class Dump:
    path: Path  # the finished local file, not yet in storage
    size_bytes: int
    sha256: str
    engine: str
    tool_versions: dict[str, str]
    manifest: dict[str, Any]
    # The dump before encryption; equal to size_bytes and sha256 (what is stored) when not encrypted.
    plaintext_sha256: str = ""
    plaintext_size: int = 0
    encrypted: bool = False


class HashingWriter:
    def __init__(self, handle: IO[bytes]) -> None:
        self.handle = handle
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, chunk: bytes) -> None:
        self.handle.write(chunk)
        self.digest.update(chunk)
        self.size += len(chunk)


def partial_dir() -> Path:
    return private_dir(Path(settings.BACKUP_TMP_DIR))


_widened_dirs_logged: set[str] = set()


def private_dir(path: Path) -> Path:
    """``path`` as a directory only its owner can enter (0700): dumps hold every row of a database.

    One made wider by hand, or by an older release, is narrowed on use; said once per process.
    """
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        os.chmod(path, mode & 0o700)
        if str(path) not in _widened_dirs_logged:
            _widened_dirs_logged.add(str(path))
            logger.warning("backup directory %s was mode %04o, open to others: set to %04o", path, mode, mode & 0o700)
    return path


def create_private_file(path: Path | str) -> None:
    """Create ``path`` empty and readable by its owner alone (0600), before anything is written into it.

    Refuses a path that exists already, even as a dangling symlink: whatever is there is not ours to fill.
    Written then chmod-ed, the file would be open to other users for a moment.
    """
    os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW, 0o600))


@contextlib.contextmanager
def partial_file(stem: str) -> Iterator[Path]:
    """A new 0600 file next to the backups; removed unless the caller renamed it away."""
    path = partial_dir() / f"{stem}.{secrets.token_hex(4)}.partial"
    try:
        create_private_file(path)
    except OSError as exc:
        raise disk_error(exc, "local file") from None
    try:
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def disk_error(exc: OSError, where: str) -> BackupError:
    reason = exc.strerror or str(exc)
    return BackupError(f"writing the dump failed ({where}): {reason}; no backup file was kept")


def file_digest(path: Path | str) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size
