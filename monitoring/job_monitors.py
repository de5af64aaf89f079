"""Writes of job monitors that come from the jobs themselves (pings) and from beat (the minute sweep).

Operator changes (create, edit, pause, delete) go through the admin, audited by its mixin.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from django.conf import settings
from django.core.cache import cache
from django.db import connection, transaction
from django.db.models import Q
from django.db.models.sql import UpdateQuery
from django.utils import timezone

from controlplane.audit import Actor, audit_record
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
from monitoring.models import JobMonitor

logger = logging.getLogger(__name__)

OUTPUT_LIMIT_BYTES = 10 * 1024


class PingRateLimited(Exception):
    """More pings for one monitor in one second than JOB_PING_RATE_PER_SECOND."""


@dataclass(frozen=True)
class PingResult:
    state: str
    duration: timedelta | None


def ping_rate_check(key: uuid.UUID) -> None:
    """Counts this ping in the shared cache (one counter per monitor and second); raises over the limit."""
    counter = f"jobping:{key.hex}:{int(time.time())}"
    try:
        try:
            count = cache.incr(counter)
        except ValueError:  # the second's first ping (or the counter expired)
            count = 1 if cache.add(counter, 1, timeout=2) else cache.incr(counter)
    except Exception as exc:  # noqa: BLE001 - the cache is down or hangs: the ping counts, unlimited
        # A job's report matters more than the limit, which only guards against a runaway caller.
        logger.warning("job ping rate not checked, the cache failed: %s", exc)
        return
    if count > settings.JOB_PING_RATE_PER_SECOND:
        raise PingRateLimited(key)


def output_text(body: bytes, total_length: int) -> str:
    """A job's output as kept: at most OUTPUT_LIMIT_BYTES, saying so when it was cut."""
    text = body[:OUTPUT_LIMIT_BYTES].decode("utf-8", errors="replace")
    if total_length > OUTPUT_LIMIT_BYTES:
        text += f"\n[output cut: the first {OUTPUT_LIMIT_BYTES} of {total_length} bytes are kept]"
    return text


def job_ping(
    *, key: uuid.UUID, kind: str, exit_status: int | None = None, output: str | None = None
) -> PingResult | None:
    """Record a ping of the monitor whose key is ``key``; None when there is none.

    One indexed read and one UPDATE, with no transaction: two pings racing each write a consistent row
    and the later one wins, as the later ping is the newer news. ``output`` (a POST's body) replaces
    the last output; a GET leaves it as it was.
    """
    now = timezone.now()
    row = JobMonitor.objects.filter(ping_key=key).values("pk", "state", "last_start", "last_ping").first()
    if row is None:
        return None
    state = state_after_ping(row["state"], kind)
    changes: dict[str, Any] = {"state": state, "last_ping_kind": kind}
    duration: timedelta | None = None
    if kind == PING_START:
        changes["last_start"] = now
    else:
        changes["last_ping"] = now
        changes["last_exit_status"] = exit_status
        started = row["last_start"]
        if kind == PING_SUCCESS and started is not None and (row["last_ping"] is None or started > row["last_ping"]):
            duration = now - started
        changes["last_duration"] = duration
    if output is not None:
        changes["last_output"] = output
    if state != row["state"]:
        changes["state_changed"] = now
    _ping_update(row["pk"], changes)
    return PingResult(state=state, duration=duration)


def _ping_update(pk: int, changes: dict[str, Any]) -> None:
    """The ping's one UPDATE. On PostgreSQL its commit does not wait for the disk (``synchronous_commit``
    off for this statement's transaction only): a crash of the database server may lose the last
    fraction of a second of pings, which the jobs' next pings repeat, and the ping no longer spends most
    of its time waiting on fsync. The SET and the UPDATE go in one query string, which PostgreSQL runs
    as one transaction: one round trip, as before (inside a caller's transaction the setting lasts to its
    end). Elsewhere (SQLite's WAL with synchronous=NORMAL does
    not sync each commit), a plain UPDATE.
    """
    queryset = JobMonitor.objects.filter(pk=pk)
    if connection.vendor != "postgresql" or connection.settings_dict["OPTIONS"].get("server_side_binding"):
        queryset.update(**changes)
        return
    query = cast(UpdateQuery, queryset.query.chain(UpdateQuery))
    query.add_update_values(changes)
    sql, params = query.get_compiler(connection=connection).as_sql()
    with connection.cursor() as cursor:
        cursor.execute(f"SET LOCAL synchronous_commit TO OFF; {sql}", params)


def job_monitors_sweep(*, now: datetime | None = None) -> int:
    """Beat's minute pass: move up monitors to late and late ones to down by their schedules.

    Each move is a conditional UPDATE on the state and last ping read, so a ping arriving meanwhile
    wins. Returns the number of monitors moved.
    """
    now = now or timezone.now()
    moved = 0
    for monitor in JobMonitor.objects.filter(Q(state=UP) | Q(state=LATE)):
        try:
            state = next_state(monitor.state, monitor.schedule(), monitor.last_ping, now)
        except InvalidSchedule as exc:
            logger.warning("job monitor %s: %s", monitor.name, exc)
            continue
        if state == monitor.state:
            continue
        moved += JobMonitor.objects.filter(pk=monitor.pk, state=monitor.state, last_ping=monitor.last_ping).update(
            state=state, state_changed=now
        )
        if state == DOWN:
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
