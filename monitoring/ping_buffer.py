"""The job monitors' ping buffer: a ping is appended here and answered at once; a flush applies them.

Where the buffer lives follows the shared cache, since that is what every web process and worker share:

- **Redis** (``REDIS_URL``): one list. A ping is counted against its monitor's per-second limit and pushed
  in one atomic script (one round trip), so the limit holds across every process.
- **The embedded defaults** (file cache, SQLite, filesystem broker: one machine by construction): one
  append-only file in ``VAR_DIR/jobpings``. A ping is one ``write`` of one line (a few system calls,
  no database, no cache file); its limit is counted in the process (each web process allows
  ``JOB_PING_RATE_PER_SECOND``), which still stops a runaway caller.

A flush drains the buffer in arrival order under a lock, so two flushers never apply the same pings, and
removes what it read only after the caller applied it: a flusher that dies midway leaves its pings for the
next one, which applies them again (the application is idempotent: a ping no newer than what its monitor
last recorded changes nothing). A buffer that fails raises ``BufferUnavailable``; the caller then applies
the ping directly rather than lose it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.cache import caches
from django_redis.cache import RedisCache  # type: ignore[import-untyped]

logger = logging.getLogger(__name__)

BATCH = 1000  # pings read and applied at a time
LOCK_SECONDS = 30  # Redis: a flusher's lock outlives it by this much at most
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


class BufferUnavailable(Exception):
    """The buffer cannot take or give pings (Redis down, a disk that refuses the write, a held lock)."""


class BufferLocked(BufferUnavailable):
    """Another flush held the buffer past the wait: the store works, and pings may be waiting in it."""


@dataclass(frozen=True)
class BufferedPing:
    at: datetime
    key: uuid.UUID
    kind: str
    exit_status: int | None = None
    output: str | None = None

    def encode(self) -> bytes:
        micros = (self.at - _EPOCH) // _MICROSECOND
        return _ENCODER.encode([micros, self.key.hex, self.kind, self.exit_status, self.output]).encode()

    @classmethod
    def decode(cls, raw: bytes) -> BufferedPing:
        micros, key, kind, exit_status, output = json.loads(raw)
        return cls(_EPOCH + timedelta(microseconds=micros), uuid.UUID(hex=key), kind, exit_status, output)


Apply = Callable[[Sequence[BufferedPing]], int]


def _decoded(raws: Sequence[bytes]) -> list[BufferedPing]:
    pings = []
    for raw in raws:
        if not raw.strip():
            continue
        try:
            pings.append(BufferedPing.decode(raw))
        except (ValueError, TypeError) as exc:  # a line cut by a full disk: nothing to recover from it
            logger.error("job ping buffer: skipping an unreadable entry (%d bytes): %s", len(raw), exc)
    return pings


# --- Redis --------------------------------------------------------------------------------------------

_PUSH = """
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('EXPIRE', KEYS[1], 2) end
if count > tonumber(ARGV[1]) then return 0 end
redis.call('RPUSH', KEYS[2], ARGV[2])
return 1
"""
# Trims what a flusher applied only while it still holds the lock: one whose lock expired mid-way
# leaves the list to the flusher that took over (which re-reads, and may re-apply, the same pings).
_TRIM = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('LTRIM', KEYS[2], tonumber(ARGV[2]), -1)
return 1
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RedisBuffer:
    def __init__(self, cache: Any) -> None:
        self._client = cache.client.get_client(write=True)
        # EVALSHA, with the script sent again only after a Redis restart forgot it.
        self._push = self._client.register_script(_PUSH)
        self._trim = self._client.register_script(_TRIM)
        self._release = self._client.register_script(_RELEASE)
        self._make_key = cache.make_key
        self.list_key = cache.make_key("jobpings:pending")
        self.lock_key = cache.make_key("jobpings:flush-lock")

    def append(self, ping: BufferedPing, limit: int) -> bool:
        """Count the ping and push it, unless it is over its monitor's limit (then False)."""
        counter = self._make_key(f"jobping:{ping.key.hex}:{int(time.time())}")
        try:
            pushed = self._push(keys=[counter, self.list_key], args=[limit, ping.encode()])
        except Exception as exc:  # redis-py's errors, socket timeouts
            raise BufferUnavailable(f"Redis: {exc}") from exc
        return bool(pushed)

    def pending(self) -> int:
        try:
            return int(self._client.llen(self.list_key))
        except Exception as exc:
            raise BufferUnavailable(f"Redis: {exc}") from exc

    def drain(self, apply: Apply, *, wait: float) -> int:
        token = uuid.uuid4().hex
        try:
            deadline = time.monotonic() + wait
            while not self._client.set(self.lock_key, token, nx=True, ex=LOCK_SECONDS):
                if time.monotonic() >= deadline:
                    raise BufferLocked("another flush holds the lock")
                time.sleep(0.02)
        except BufferUnavailable:
            raise
        except Exception as exc:
            raise BufferUnavailable(f"Redis: {exc}") from exc
        applied = 0
        try:
            while True:
                try:
                    raws = self._client.lrange(self.list_key, 0, BATCH - 1)
                except Exception as exc:
                    raise BufferUnavailable(f"Redis: {exc}") from exc
                if not raws:
                    break
                applied += apply(_decoded(raws))
                try:
                    kept = self._trim(keys=[self.lock_key, self.list_key], args=[token, len(raws)])
                except Exception as exc:
                    raise BufferUnavailable(f"Redis: {exc}") from exc
                if not kept:
                    logger.warning("job ping flush: the lock expired mid-way; the next flush takes over")
                    break
                if len(raws) < BATCH:
                    break
        finally:
            with contextlib.suppress(Exception):  # an expired lock frees itself
                self._release(keys=[self.lock_key], args=[token])
        return applied


# --- A file on this machine ---------------------------------------------------------------------------


class _Writer(threading.local):
    fd: int | None = None


class SpoolBuffer:
    """One append-only file every process of this machine writes (``O_APPEND``: lines never interleave).

    A writer holds a shared lock only while it checks that its file is still linked and writes. A flusher
    (holding ``flush.lock``) renames the file aside, then takes an exclusive lock on it, which waits for
    the writes in flight, and keeps it until it has applied the file and removed it: a writer that comes
    meanwhile finds the file locked, one that comes later finds it removed, and either opens the new
    file. Files set aside by a flusher that died are read first, and again by the next.
    """

    _writer = _Writer()
    _counts: dict[uuid.UUID, int] = {}  # this process's pings per monitor in the current second
    _second = 0
    _count_lock = threading.Lock()

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / "pending.spool"

    def append(self, ping: BufferedPing, limit: int) -> bool:
        if not self._count(ping.key, limit):
            return False
        line = ping.encode() + b"\n"
        try:
            self._write(line)
        except OSError as exc:
            raise BufferUnavailable(f"{self.path}: {exc}") from exc
        return True

    @classmethod
    def _count(cls, key: uuid.UUID, limit: int) -> bool:
        second = int(time.time())
        with cls._count_lock:
            if second != cls._second:
                cls._second, cls._counts = second, {}
            count = cls._counts[key] = cls._counts.get(key, 0) + 1
        return count <= limit

    def _write(self, line: bytes) -> None:
        writer = self._writer
        for _ in range(5):
            if writer.fd is None:
                self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
                writer.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            fd = writer.fd
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:  # a flusher is taking this file: write to the next one
                self._close_writer()
                continue
            stale = True
            try:
                stale = os.fstat(fd).st_nlink == 0  # applied and removed by a flusher
                if not stale:
                    written = os.write(fd, line)
                    if written != len(line):
                        raise OSError(f"short write: {written} of {len(line)} bytes")
                    return
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
                if stale:
                    self._close_writer()
        raise OSError("the spool file kept being renamed")

    def _close_writer(self) -> None:
        writer = self._writer
        if writer.fd is not None:
            with contextlib.suppress(OSError):
                os.close(writer.fd)
        writer.fd = None

    @classmethod
    def forget_after_fork(cls) -> None:
        """In a forked child: the parent's descriptor and counts are not this process's."""
        cls._writer = _Writer()
        cls._counts, cls._second = {}, 0
        cls._count_lock = threading.Lock()

    def pending(self) -> int:
        """Bytes waiting (0: nothing)."""
        total = 0
        with contextlib.suppress(FileNotFoundError):
            total += self.path.stat().st_size
        for claimed in self._claimed():
            with contextlib.suppress(FileNotFoundError):
                total += claimed.stat().st_size
        return total

    def _claimed(self) -> list[Path]:
        try:
            return sorted(self.directory.glob("claimed-*.spool"))
        except OSError:
            return []

    @contextlib.contextmanager
    def _flush_lock(self, wait: float) -> Iterator[None]:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.directory / "flush.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            deadline = time.monotonic() + wait
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise BufferLocked("another flush holds the lock") from None
                    time.sleep(0.02)
            yield
        finally:
            os.close(fd)  # releases the lock

    def drain(self, apply: Apply, *, wait: float) -> int:
        try:
            with self._flush_lock(wait):
                with contextlib.suppress(FileNotFoundError):
                    # Named by the time, so that files left by a flusher that died sort before this one.
                    os.rename(self.path, self.directory / f"claimed-{time.time_ns():020d}-{os.getpid()}.spool")
                applied = 0
                for claimed in self._claimed():
                    applied += self._drain_file(claimed, apply)
                return applied
        except OSError as exc:
            raise BufferUnavailable(f"{self.directory}: {exc}") from exc

    def _drain_file(self, path: Path, apply: Apply) -> int:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # the writes in flight end first; later ones go elsewhere
            with os.fdopen(os.dup(fd), "rb") as file:
                pings = _decoded(file.read().split(b"\n"))
            applied = 0
            for start in range(0, len(pings), BATCH):
                applied += apply(pings[start : start + BATCH])
            path.unlink()  # only once applied: a flusher that dies before leaves it for the next
            return applied
        finally:
            os.close(fd)


# --- Which one ----------------------------------------------------------------------------------------


class _Chosen(threading.local):
    # The cache object (one per thread, replaced when tests change CACHES), VAR_DIR, and the buffer.
    value: tuple[object, object, RedisBuffer | SpoolBuffer] | None = None


_chosen = _Chosen()


def buffer() -> RedisBuffer | SpoolBuffer:
    """The buffer of the configured shared cache."""
    cache = caches["default"]
    var_dir = settings.VAR_DIR
    chosen = _chosen.value
    if chosen is not None and chosen[0] is cache and chosen[1] == var_dir:
        return chosen[2]
    found: RedisBuffer | SpoolBuffer
    found = RedisBuffer(cache) if isinstance(cache, RedisCache) else SpoolBuffer(Path(var_dir) / "jobpings")
    _chosen.value = (cache, var_dir, found)
    return found
