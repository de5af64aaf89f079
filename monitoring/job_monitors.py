"""Writes of job monitors that come from the jobs themselves (pings) and from beat (the minute sweep).

Operator changes (create, edit, pause, delete) go through the admin, audited by its mixin.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.db.models import Q
from django.utils import timezone

from controlplane.audit import Actor, audit_record
from controlplane.localcopy import LocalCopy, LocalCopyUnavailable
from monitoring import ping_buffer
from monitoring.jobs import (
    DOWN,
    LATE,
    NEW,
    PAUSED,
    PING_START,
    PING_SUCCESS,
    UP,
    InvalidSchedule,
    next_state,
    state_after_ping,
)
from monitoring.models import Heartbeat, JobMonitor
from monitoring.ping_buffer import BufferedPing, BufferLocked, BufferUnavailable

logger = logging.getLogger(__name__)

OUTPUT_LIMIT_BYTES = 10 * 1024


class PingRateLimited(Exception):
    """More pings for one monitor in one second than JOB_PING_RATE_PER_SECOND."""


def output_text(body: bytes, total_length: int) -> str:
    """A job's output as kept: at most OUTPUT_LIMIT_BYTES, saying so when it was cut."""
    text = body[:OUTPUT_LIMIT_BYTES].decode("utf-8", errors="replace")
    if total_length > OUTPUT_LIMIT_BYTES:
        text += f"\n[output cut: the first {OUTPUT_LIMIT_BYTES} of {total_length} bytes are kept]"
    return text


# --- The ping: known key, buffered, answered -----------------------------------------------------------


def _load_ping_keys() -> frozenset[uuid.UUID]:
    return frozenset(JobMonitor.objects.values_list("ping_key", flat=True))


# Every monitor's key, so that a ping learns whether its key is known without the database. Bumped when a
# monitor is created or deleted (monitoring/apps.py); a key created since this process's last look (at
# most CONTROLPLANE_RELOAD_INTERVAL) is found in the database instead. A monitor deleted since then is
# answered OK by the processes that have not looked yet, and its pings are dropped when applied.
ping_keys: LocalCopy[frozenset[uuid.UUID]] = LocalCopy("job-ping-keys", _load_ping_keys)


def on_monitor_saved(sender: type[JobMonitor], instance: JobMonitor, created: bool, **kwargs: object) -> None:
    if created:  # a key never changes
        ping_keys.bump()


def on_monitor_deleted(sender: type[JobMonitor], instance: JobMonitor, **kwargs: object) -> None:
    ping_keys.bump()


class _MissBucket:
    """An in-process token bucket for the database look-ups of keys the local copy does not hold.

    Such a key is either a monitor made in the last reload interval in another process (rare, and its
    job pings again) or a guess: without a bound, each random key an unauthenticated caller sends would
    cost a query. ``MISS_LOOKUPS_PER_SECOND`` look-ups a second (a burst of ``MISS_LOOKUPS_BURST``) go to
    the database; past that an unknown key is a 404 at once.
    """

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst = rate, burst
        self._tokens, self._at = burst, time.monotonic()
        self._lock = threading.Lock()

    def take(self) -> bool:
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
            self._at = now
            if self._tokens < 1:
                return False
            self._tokens -= 1
            return True


MISS_LOOKUPS_PER_SECOND = 5.0
MISS_LOOKUPS_BURST = 10.0
_miss_bucket = _MissBucket(MISS_LOOKUPS_PER_SECOND, MISS_LOOKUPS_BURST)
# Keys this process found in the database that its local copy did not hold yet (monitors made in
# another process since its last look): known from then on without a look-up. At most the monitors'
# number; a deleted one's pings are dropped when applied, as for the local copy.
_found_keys: set[uuid.UUID] = set()


def ping_key_known(key: uuid.UUID) -> bool:
    """Whether a monitor has ``key``: from the local copy; else from the database, within the miss
    bucket's rate (a key unknown past it is answered unknown without a query)."""
    try:
        if key in ping_keys.get():
            return True
    except LocalCopyUnavailable:
        pass
    if key in _found_keys:
        return True
    if not _miss_bucket.take():
        return False
    if JobMonitor.objects.filter(ping_key=key).exists():
        _found_keys.add(key)
        return True
    return False


def job_ping(*, ping: BufferedPing) -> bool:
    """Record a ping of the monitor whose key is ``ping.key``: False when there is none.

    The ping goes to the buffer (``monitoring.ping_buffer``) and a flush applies it, at once when
    ``JOB_PING_FLUSH_SECONDS`` is 0, else within that many seconds from this process's flush thread
    (beat's sweep flushes too, before it decides anything). Raises PingRateLimited over the monitor's
    limit. When the buffer cannot take the ping, it is applied here and now (the limit then fails open:
    a job's report matters more than the limit, which only guards against a runaway caller).
    """
    if not ping_key_known(ping.key):
        return False
    try:
        taken = ping_buffer.buffer().append(ping, settings.JOB_PING_RATE_PER_SECOND)
    except BufferUnavailable as exc:
        logger.warning("job ping applied directly, the ping buffer failed: %s", exc)
        apply_pings([ping])
        return True
    if not taken:
        raise PingRateLimited(ping.key)
    if settings.JOB_PING_FLUSH_SECONDS <= 0:
        try:
            flush_pings()
        except (BufferUnavailable, DatabaseError) as exc:  # buffered: the next flush applies it
            logger.warning("job ping buffered, not applied yet: %s", exc)
    else:
        _wake_flusher()
    return True


# --- Applying pings ------------------------------------------------------------------------------------

_ROW_FIELDS = ("pk", "ping_key", "state", "last_start", "last_ping")


def apply_pings(pings: Sequence[BufferedPing]) -> int:
    """Apply pings, in the order given, to their monitors; returns how many changed one.

    One read of the monitors, then one conditional UPDATE per monitor with all its pings folded in (the
    state, kind, exit status, start, duration and output they leave). The UPDATE matches only the row as
    read, so a sweep or another flush that changed it meanwhile makes this one read it again. A ping no
    newer than the monitor's last start or ping is skipped: it was applied already (a flush that died
    before removing it from the buffer) or newer news came first; so applying the same pings twice
    changes nothing. Pings of a key that no monitor has (deleted) are dropped.
    """
    by_key: dict[uuid.UUID, list[BufferedPing]] = {}
    for ping in pings:
        by_key.setdefault(ping.key, []).append(ping)
    if not by_key:
        return 0
    applied = 0
    with transaction.atomic(savepoint=False):
        rows = {row["ping_key"]: row for row in JobMonitor.objects.filter(ping_key__in=by_key).values(*_ROW_FIELDS)}
        for key, mine in by_key.items():
            row = rows.get(key)
            for _attempt in range(5):
                if row is None:
                    logger.info("job pings dropped: no monitor has their key (deleted)")
                    break
                count, changes = _fold(row, mine)
                if not changes:
                    break
                matched = JobMonitor.objects.filter(
                    pk=row["pk"], state=row["state"], last_start=row["last_start"], last_ping=row["last_ping"]
                ).update(**changes)
                if matched:
                    applied += count
                    break
                row = JobMonitor.objects.filter(pk=row["pk"]).values(*_ROW_FIELDS).first()
    return applied


def _fold(row: dict[str, Any], pings: Sequence[BufferedPing]) -> tuple[int, dict[str, Any]]:
    """The changes ``pings`` make, in order, to a monitor as read; and how many of them count."""
    state, last_start, last_ping = row["state"], row["last_start"], row["last_ping"]
    changes: dict[str, Any] = {}
    count = 0
    for ping in pings:
        newest = max((t for t in (last_start, last_ping) if t is not None), default=None)
        if newest is not None and ping.at <= newest:
            continue  # applied already, or older than what the monitor holds
        count += 1
        after = state_after_ping(state, ping.kind)
        changes["last_ping_kind"] = ping.kind
        if ping.kind == PING_START:
            last_start = changes["last_start"] = ping.at
        else:
            duration: timedelta | None = None
            if ping.kind == PING_SUCCESS and last_start is not None and (last_ping is None or last_start > last_ping):
                duration = ping.at - last_start
            last_ping = ping.at
            changes.update(last_ping=ping.at, last_exit_status=ping.exit_status, last_duration=duration)
        if ping.output is not None:
            changes["last_output"] = ping.output
        if after != state:
            changes["state_changed"] = ping.at
            state = after
        changes["state"] = state
    return count, changes


def flush_pings(*, wait: float = 10.0) -> int:
    """Apply every buffered ping, in order; returns how many changed a monitor.

    Raises BufferUnavailable when the buffer cannot be read (or another flush held it past ``wait``
    seconds), and the database's error when the pings cannot be applied: they stay buffered.
    """
    return ping_buffer.buffer().drain(apply_pings, wait=wait)


# The web process's flush thread: started by the first buffered ping (a gunicorn master that loads the
# application before forking serves none), woken by each, flushing at most once per JOB_PING_FLUSH_SECONDS:
# a lone ping is applied at once, a stream of them in one batch a second.
_flusher: threading.Thread | None = None
_flusher_lock = threading.Lock()
_wake = threading.Event()
_fork_hook_registered = False


def _wake_flusher() -> None:
    global _flusher, _fork_hook_registered
    _wake.set()
    if _flusher is not None:
        return
    with _flusher_lock:
        if _flusher is None:
            if not _fork_hook_registered:
                os.register_at_fork(after_in_child=_forget_parent)
                atexit.register(_flush_at_exit)
                _fork_hook_registered = True
            _flusher = threading.Thread(target=_flush_forever, name="job-ping-flush", daemon=True)
            _flusher.start()


def _flush_forever() -> None:
    while True:
        _wake.wait()
        _wake.clear()
        try:
            flush_pings()
        except Exception as exc:  # noqa: BLE001 - the pings stay buffered: try again after the pause
            logger.warning("job ping flush failed, retrying: %s", exc)
            _wake.set()
        finally:
            connection.close()  # this thread's own connection: not kept between flushes
        time.sleep(settings.JOB_PING_FLUSH_SECONDS)


def _flush_at_exit() -> None:
    if _wake.is_set():
        with contextlib.suppress(Exception):
            flush_pings(wait=1.0)


def _forget_parent() -> None:
    """In a forked child: the parent's thread did not come along and its lock may have been held."""
    global _flusher, _flusher_lock, _wake
    _flusher, _flusher_lock, _wake = None, threading.Lock(), threading.Event()
    _miss_bucket._lock = threading.Lock()
    ping_buffer.SpoolBuffer.forget_after_fork()


# --- Beat's sweep --------------------------------------------------------------------------------------


# The moment the sweep first found the ping buffer unreadable (the store down), kept in the database
# (the store is down) as a Heartbeat row while it stays so; removed by the next sweep that reads it.
UNREADABLE_SINCE = "job-pings-unreadable-since"
_SEVERITY = {UP: 0, LATE: 1, DOWN: 2}
SWEEP_FLUSH_WAIT = 30.0  # seconds the sweep waits for another flush to finish before it gives up


def _unreadable_since(now: datetime) -> datetime:
    row, _ = Heartbeat.objects.get_or_create(
        name=UNREADABLE_SINCE, defaults={"last_seen": now, "hostname": socket.gethostname()[:255]}
    )
    return row.last_seen


def job_monitors_sweep(*, now: datetime | None = None) -> int:
    """Beat's minute pass: move up monitors to late and late ones to down by their schedules.

    Buffered pings are applied first: a monitor whose ping waits in the buffer is never turned late or
    down for want of it. When the buffer cannot be read:

    - another flush holds it (``BufferLocked``): pings may be waiting and the store works, so this pass
      moves nothing; the next one, a minute later, decides.
    - the store is down (any other ``BufferUnavailable``): while it is, a ping's append fails and the
      ping is applied directly, so the only pings that can be waiting are those buffered before the
      store went down, which is no later than the first sweep that found it unreadable (``since``, kept
      in the database until a sweep reads the buffer again). Each monitor is then judged as if a success
      ping had arrived at ``since`` (the latest a waiting ping can be): it moves only as far as it would
      with that ping, so no waiting ping can prove a move wrong, and a job that stopped pinging still
      goes late and down, one period later at most. (A store that comes back and fails again between
      two sweeps may hold a ping buffered after ``since``: its monitor then goes back up when the ping
      is applied.)

    Before moving any monitor, the buffer is flushed once more, so that a ping buffered since the first
    flush is applied first (a flush that fails then moves nothing this minute); and each move is a
    conditional UPDATE on the state and last ping read, so a ping applied meanwhile wins. Returns the
    number of monitors moved.
    """
    now = now or timezone.now()
    since: datetime | None = None
    try:
        flush_pings(wait=SWEEP_FLUSH_WAIT)
    except BufferLocked as exc:
        logger.error("job monitors not swept: another flush holds the ping buffer, pings may wait there: %s", exc)
        return 0
    except BufferUnavailable as exc:
        since = _unreadable_since(now)
        logger.error(
            "job ping buffer unreadable since %s: monitors move only as a ping then would let them: %s", since, exc
        )
    else:
        Heartbeat.objects.filter(name=UNREADABLE_SINCE).delete()
    planned: list[tuple[JobMonitor, str]] = []
    for monitor in JobMonitor.objects.filter(Q(state=UP) | Q(state=LATE)):
        last_ping = monitor.last_ping
        if since is not None and last_ping is not None and last_ping < since:
            last_ping = since  # a success ping buffered before the store went down may be waiting
        try:
            state = next_state(monitor.state, monitor.schedule(), last_ping, now)
        except InvalidSchedule as exc:
            logger.warning("job monitor %s: %s", monitor.name, exc)
            continue
        if _SEVERITY.get(state, 0) > _SEVERITY[monitor.state]:
            planned.append((monitor, state))
    if planned and since is None:
        try:
            flush_pings(wait=SWEEP_FLUSH_WAIT)  # a ping buffered since the first flush: applied before anything moves
        except BufferUnavailable as exc:
            logger.error("job monitors not moved: the ping buffer could not be read again: %s", exc)
            return 0
    moved = 0
    for monitor, state in planned:
        matched = JobMonitor.objects.filter(pk=monitor.pk, state=monitor.state, last_ping=monitor.last_ping).update(
            state=state, state_changed=now
        )
        moved += matched
        if matched and state == DOWN:
            logger.warning("job monitor %s is down: no ping since %s", monitor.name, monitor.last_ping)
    return moved


def job_monitor_set_paused(*, monitor: JobMonitor, paused: bool, actor: Actor) -> bool:
    """Pause a monitor (no late or down, so no alert) or resume it (new again: the next ping makes it up).

    Audited; returns False when it was already in that state.
    """
    with transaction.atomic():
        current = JobMonitor.objects.select_for_update().get(pk=monitor.pk)
        if (current.state == PAUSED) == paused:
            return False
        before = {"state": current.state}
        current.state = PAUSED if paused else NEW
        current.state_changed = timezone.now()
        current.save(update_fields=["state", "state_changed"])
        audit_record(
            actor=actor,
            action="jobmonitor.pause" if paused else "jobmonitor.resume",
            obj=current,
            before=before,
            after={"state": current.state},
        )
    monitor.state = current.state
    return True
