"""In-process copies of shared data, reloaded when a version in the shared cache changes.

Hot paths (flag evaluation, token checks) read a local dict instead of the database or the cache.
Every write bumps the version in the shared cache after commit; each process looks at that version
at most once per ``CONTROLPLANE_RELOAD_INTERVAL`` seconds and reloads when it changed.

Faults never stop the hot path:

- A look at the version happens at most once per interval per process, whatever comes of it, and while
  one thread looks (or reloads) the others serve the copy they have instead of queueing behind it: a
  cache that accepts connections and never answers costs one request one short socket timeout, not
  every request two.
- With the shared cache failing, a process keeps serving its last copy, logs the fault, asks the cache
  again after a back-off (doubling up to ``CACHE_BACKOFF_MAX`` seconds), and meanwhile reads the rows
  every CONTROLPLANE_FAULT_RELOAD_SECONDS, so a revoked token or a flag turned off still takes effect.
- Each newly loaded copy that differs from the last one is kept on local disk
  (``VAR_DIR/localcopy/<name>.pickle``, mode 0600: it holds token hashes), so that a process that starts
  while the database cannot be read serves that copy instead of failing every request. With neither,
  ``get`` raises LocalCopyUnavailable (the APIs answer 503).

The disk copy is a risk accepted for availability: it is read only when the database cannot be, and it
is replaced by the rows as soon as the database answers. Until then a process started during an outage
accepts what the copy holds: a token revoked (or a flag changed) after the copy was last written, which
can only be while no process on this machine could reload, is still accepted (or served as it was).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import pickle  # noqa: S403 - our own file, 0600 in VAR_DIR, checked to be ours before it is read
import tempfile
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

from django.conf import settings
from django.core.cache import cache
from django.db import transaction

logger = logging.getLogger(__name__)
T = TypeVar("T")
_FAULT_LOG_INTERVAL = 30.0
# Seconds before the cache is asked again after its first failure; doubles with each failure after it.
CACHE_BACKOFF_FIRST = 1.0
CACHE_BACKOFF_MAX = 30.0
# With no copy at all, seconds between tries of the database (every request in between is a 503 at once).
UNAVAILABLE_RETRY = 1.0
_DISK_FORMAT = 1
_registry: weakref.WeakSet[LocalCopy] = weakref.WeakSet()


class LocalCopyUnavailable(Exception):
    """Neither the database nor a copy kept on disk could give this process a first copy."""


class LocalCopy(Generic[T]):
    def __init__(self, name: str, loader: Callable[[], T]) -> None:
        self.name = name
        self.version_key = f"localcopy:{name}:version"
        self._loader = loader
        self._lock = threading.Lock()
        self._reset()
        _registry.add(self)

    def _reset(self) -> None:
        self._data: T | None = None
        self._version: str | None = None
        self._next_check = float("-inf")  # monotonic time of the next look at the shared version
        self._loaded_at = float("-inf")  # of the last load from the database, done or tried
        self._load_failed = False
        self._cache_failures = 0
        self._cache_retry_at = float("-inf")  # while the cache fails, it is not asked before this
        self._disk_digest: bytes | None = None  # of what this process last wrote or read on disk
        self._fault_logged_at = float("-inf")

    def get(self) -> T:
        """The current copy; looks at the shared version at most once per interval."""
        data = self._data
        if data is not None and time.monotonic() < self._next_check:
            return data
        return self._refresh()

    def _refresh(self) -> T:
        data = self._data
        if data is None:
            self._lock.acquire()  # nothing to serve yet: wait for the thread that loads
        elif not self._lock.acquire(blocking=False):
            return data  # another thread is looking or loading: serve the copy we have meanwhile
        try:
            now = time.monotonic()
            if self._data is not None and now < self._next_check:
                return self._data  # another thread refreshed while this one waited
            return self._refresh_locked(now)
        finally:
            self._lock.release()

    def _refresh_locked(self, now: float) -> T:
        interval = settings.CONTROLPLANE_RELOAD_INTERVAL
        fault_reload = settings.CONTROLPLANE_FAULT_RELOAD_SECONDS
        if self._data is None and self._load_failed and now - self._loaded_at < UNAVAILABLE_RETRY:
            raise LocalCopyUnavailable(f"no {self.name} copy: the database cannot be read and none is on disk")
        self._next_check = now + interval  # one look per interval, whatever comes of it
        version, cache_answered = None, False
        if now >= self._cache_retry_at:
            try:
                version, cache_answered = self._shared_version(), True
                self._cache_failures = 0
            except Exception as exc:  # any cache client error: keep serving what we have
                self._cache_failures += 1
                backoff = min(CACHE_BACKOFF_MAX, CACHE_BACKOFF_FIRST * 2 ** (self._cache_failures - 1))
                self._cache_retry_at = time.monotonic() + backoff
                self._log_fault("shared cache unreachable, serving the last %s copy: %s", exc)
                # A change made meanwhile cannot publish its version: reload when the cache answers
                # again, whatever version it holds.
                self._version = None
        if self._data is not None:
            if cache_answered and version == self._version:
                return self._data
            if (not cache_answered or self._load_failed) and now - self._loaded_at < fault_reload:
                # The cache fails or the database did: the rows are read again after the fault interval.
                if not cache_answered:
                    self._next_check = max(self._next_check, min(self._cache_retry_at, self._loaded_at + fault_reload))
                return self._data
        return self._load(now, version)

    def _shared_version(self) -> str | None:
        version = cache.get(self.version_key)
        if version is None:
            cache.add(self.version_key, _new_version(), timeout=None)
            version = cache.get(self.version_key)
        return version

    def _load(self, now: float, version: str | None) -> T:
        try:
            data = self._loader()
        except Exception as exc:  # database down: the last copy, else the one on disk
            self._loaded_at, self._load_failed = now, True
            if self._data is not None:
                self._log_fault("reload failed, serving the last %s copy: %s", exc)
                return self._data
            disk = self._read_disk()
            if disk is None:
                self._log_fault("no %s copy: the database cannot be read and none is on disk: %s", exc)
                raise LocalCopyUnavailable(
                    f"no {self.name} copy: the database cannot be read and none is on disk"
                ) from exc
            self._log_fault("database unreachable, serving the %s copy kept on disk: %s", exc)
            self._data, self._version = disk, None  # reloaded from the rows as soon as they can be read
            return disk
        self._data, self._version, self._loaded_at, self._load_failed = data, version, now, False
        self._keep_on_disk(data)
        return data

    # --- the copy on disk ---------------------------------------------------------------------------

    def disk_path(self) -> Path:
        return Path(settings.VAR_DIR) / "localcopy" / f"{self.name}.pickle"

    def _keep_on_disk(self, data: T) -> None:
        """Write ``data`` to disk if it differs from what is there: atomically (several processes on
        this machine write the same file; each write replaces it whole), never failing the request."""
        path = self.disk_path()
        try:
            blob = pickle.dumps((_DISK_FORMAT, self.name, data), protocol=pickle.HIGHEST_PROTOCOL)
            digest = hashlib.sha256(blob).digest()
            if digest == self._disk_digest:
                return
            with contextlib.suppress(FileNotFoundError):
                if hashlib.sha256(path.read_bytes()).digest() == digest:
                    self._disk_digest = digest  # another process wrote the same copy
                    return
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")  # mode 0600
            try:
                with os.fdopen(fd, "wb") as file:
                    file.write(blob)
                    file.flush()
                    os.fsync(file.fileno())
                os.replace(tmp, path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
            self._disk_digest = digest
        except Exception as exc:  # the copy in memory is what serves; the disk one is a spare
            self._log_fault("could not keep the %s copy on disk: %s", exc)

    def _read_disk(self) -> T | None:
        path = self.disk_path()
        try:
            with path.open("rb") as file:
                status = os.fstat(file.fileno())
                # Unpickling runs code: only a file of this user's own that nobody else may write.
                if status.st_uid != os.getuid() or status.st_mode & 0o022:
                    logger.error("ignoring %s: not owned by this user, or writable by others", path)
                    return None
                blob = file.read()
            fmt, name, data = pickle.loads(blob)  # noqa: S301 - see above
        except FileNotFoundError:
            return None
        except Exception as exc:  # unreadable, or written by a version of the code that differs
            logger.error("ignoring the %s copy on disk: %s", self.name, exc)
            return None
        if fmt != _DISK_FORMAT or name != self.name:
            return None
        self._disk_digest = hashlib.sha256(blob).digest()
        return data

    # --- the rest -----------------------------------------------------------------------------------

    def _log_fault(self, message: str, exc: Exception) -> None:
        now = time.monotonic()
        if now - self._fault_logged_at >= _FAULT_LOG_INTERVAL:
            self._fault_logged_at = now
            logger.error(message, self.name, exc)

    def bump(self) -> None:
        """Tell every process to reload, once the current transaction commits."""
        transaction.on_commit(self._bump_now)

    def _bump_now(self) -> None:
        try:
            cache.set(self.version_key, _new_version(), timeout=None)
        except Exception as exc:  # the change is committed; processes catch up when the cache returns
            logger.error("could not publish the new %s version: %s", self.name, exc)
        # This process reloads on its next read, whatever the cache says.
        self._version = None
        self._next_check = self._loaded_at = float("-inf")

    def forget(self) -> None:
        """Drop the copy in memory (the one on disk stays)."""
        with self._lock:
            self._reset()


def _new_version() -> str:
    return os.urandom(8).hex()


def forget_all() -> None:
    """Drop every process-local copy (tests, after the database was reset under them)."""
    for copy in list(_registry):
        copy.forget()
