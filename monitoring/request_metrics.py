"""Request metrics: each process times its requests and sums them per minute; every few seconds
(REQUEST_METRICS_FLUSH_SECONDS) it adds the sums to the shared per-minute rollups in the database and
to prometheus-client's multiprocess files, so /metrics is right under several gunicorn workers. The
request path itself only adds to a dict."""

from __future__ import annotations

import atexit
import bisect
import logging
import os
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.db import IntegrityError, close_old_connections, connections, transaction
from django.db.backends.signals import connection_created
from django.db.models import F
from django.http import HttpRequest, HttpResponse

from flags.selectors import PERFORMANCE_MONITORING, is_on
from monitoring.health import PROBE_VIEWS_BY_PATH
from monitoring.models import BUCKET_FIELDS, LATENCY_BUCKETS_MS, RequestRollup

logger = logging.getLogger(__name__)

# (minute epoch seconds, view, method, status class) -> [count, errors, duration sum, db sum, slow, *buckets]
_Key = tuple[int, str, str, str]
_pending: dict[_Key, list[float]] = {}
# Sums already given to Prometheus that the database has not taken yet (it was down).
_unsaved: dict[_Key, list[float]] = {}
_lock = threading.Lock()
_flusher: threading.Thread | None = None
_N_FIXED = 5


def _record(key: _Key, duration_ms: float, db_ms: float, slow: int, error: bool) -> None:
    bucket = bisect.bisect_left(LATENCY_BUCKETS_MS, duration_ms)
    with _lock:
        row = _pending.get(key)
        if row is None:
            row = _pending[key] = [0.0] * (_N_FIXED + len(BUCKET_FIELDS))
        row[0] += 1
        row[1] += error
        row[2] += duration_ms
        row[3] += db_ms
        row[4] += slow
        row[_N_FIXED + bucket] += 1


def discard_pending() -> None:
    """Forget the pending sums, and record again until the flag is next read (tests start clean)."""
    global _recording
    with _lock:
        _pending.clear()
        _unsaved.clear()
        _recording = True


# Whether requests are recorded: the ``performance_monitoring`` flag as the flush thread last read it.
# The request path reads this boolean, not the flag: even the flags' local copy may look at the shared
# cache or load from the database, which the liveness probe must never wait for. A change reaches each
# process within one flush interval; a missing flag leaves recording on, as before anything read it.
_recording = True


def refresh_gate() -> bool:
    """Read ``performance_monitoring`` (off: requests are no longer recorded) and return it."""
    global _recording
    _recording = is_on(PERFORMANCE_MONITORING, default=True)
    return _recording


def _merge(into: dict[_Key, list[float]], rows: dict[_Key, list[float]]) -> None:
    for key, row in rows.items():
        current = into.setdefault(key, [0.0] * len(row))
        for i, value in enumerate(row):
            current[i] += value


def flush() -> int:
    """Add this process's pending sums to Prometheus and to the shared rollups; returns the rows
    written. Prometheus gets each sum once; the database, if down, gets it on a later flush."""
    from monitoring import prometheus

    with _lock:
        pending = dict(_pending)
        _pending.clear()
    for (_, view, method, status_class), row in pending.items():
        buckets = [int(n) for n in row[_N_FIXED:]]
        prometheus.add_sums(view, method, status_class, int(row[0]), row[2] / 1000, buckets)
    with _lock:
        _merge(_unsaved, pending)
        batch = dict(_unsaved)
        _unsaved.clear()
    written: list[_Key] = []
    try:
        for key in batch:
            minute_ts, view, method, status_class = key
            _add(datetime.fromtimestamp(minute_ts, UTC), view, method, status_class, batch[key])
            written.append(key)
    except Exception as exc:  # database down: kept, and added on the next flush
        logger.error("request metrics not stored, kept for the next flush: %s", exc)
        with _lock:
            _merge(_unsaved, {key: row for key, row in batch.items() if key not in written})
    return len(written)


def _add(minute: datetime, view: str, method: str, status_class: str, row: list[float]) -> None:
    increments: dict[str, Any] = {
        "count": F("count") + int(row[0]),
        "errors": F("errors") + int(row[1]),
        "duration_ms_sum": F("duration_ms_sum") + row[2],
        "db_ms_sum": F("db_ms_sum") + row[3],
        "slow_queries": F("slow_queries") + int(row[4]),
    }
    for i, field in enumerate(BUCKET_FIELDS):
        if row[_N_FIXED + i]:
            increments[field] = F(field) + int(row[_N_FIXED + i])
    lookup = {"minute": minute, "view": view, "method": method, "status_class": status_class}
    # An UPDATE that adds, so several processes flushing the same minute never lose a count.
    if RequestRollup.objects.filter(**lookup).update(**increments):
        return
    values = {
        "count": int(row[0]), "errors": int(row[1]), "duration_ms_sum": row[2], "db_ms_sum": row[3],
        "slow_queries": int(row[4]),
        **{field: int(row[_N_FIXED + i]) for i, field in enumerate(BUCKET_FIELDS)},
    }  # fmt: skip
    try:
        with transaction.atomic():
            RequestRollup.objects.create(**lookup, **values)
    except IntegrityError:  # another process created the row first: add to it
        RequestRollup.objects.filter(**lookup).update(**increments)


def _flush_forever() -> None:
    from monitoring import watchdog

    while True:
        time.sleep(settings.REQUEST_METRICS_FLUSH_SECONDS)
        try:
            refresh_gate()
            flush()  # what was recorded while the flag was on still counts
            # The web process's one background thread also stands in for a silent beat when no worker
            # is alive (at most once per check interval); a request never waits for it.
            watchdog.web_look()
        finally:
            close_old_connections()


def _start_flusher() -> None:
    """The process's flush thread, started by its first request: a gunicorn master that loads the
    application before forking its workers serves none, so it has no thread for a worker to lose
    at the fork (and never writes to the database or the cache meanwhile)."""
    global _flusher, _flusher_started, _at_exit_registered
    with _lock:
        if _flusher_started:
            return
        _flusher_started = True
        if settings.REQUEST_METRICS_FLUSH_SECONDS <= 0:
            return
        _flusher = threading.Thread(target=_flush_forever, name="request-metrics-flush", daemon=True)
        _flusher.start()
        if not _at_exit_registered:  # inherited by a forked child, which flushes its own sums
            atexit.register(flush)
            os.register_at_fork(after_in_child=_forget_parent)
            _at_exit_registered = True


_flusher_started = False
_at_exit_registered = False


def _forget_parent() -> None:
    """In a process forked from one that served requests: the flush thread did not come along, the
    lock may have been held by it at the fork, and the sums so far are the parent's to flush."""
    global _lock, _flusher, _flusher_started
    _lock = threading.Lock()
    _pending.clear()
    _unsaved.clear()
    _flusher, _flusher_started = None, False


class _DatabaseTime(threading.local):
    """Time spent in queries by this thread since it started, and how many were slow. A request reads
    it before and after, so nothing is installed or removed per request."""

    total_ms = 0.0
    slow = 0


_database_time = _DatabaseTime()


def _time_query(execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any) -> Any:
    start = time.perf_counter()
    try:
        return execute(sql, params, many, context)
    finally:
        elapsed = (time.perf_counter() - start) * 1000
        _database_time.total_ms += elapsed
        if elapsed >= settings.SLOW_QUERY_MS:
            _database_time.slow += 1


def _install_query_timer(connection: Any, **_: Any) -> None:
    """Once per connection object (each thread has its own; they outlive reconnections)."""
    if _time_query not in connection.execute_wrappers:
        connection.execute_wrappers.insert(0, _time_query)


_STATUS_CLASS = ("0xx", "1xx", "2xx", "3xx", "4xx", "5xx")


class RequestMetricsMiddleware:
    """Times every request by view name (not raw path), method and status class, with database time,
    while the ``performance_monitoring`` flag is on."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        # Connections made from now on get the timer as they connect; those already open, now.
        connection_created.connect(_install_query_timer, weak=False, dispatch_uid="cp-request-metrics-timer")
        for existing in connections.all(initialized_only=True):
            _install_query_timer(existing)

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if not _flusher_started:
            _start_flusher()
        database = _database_time
        db_before, slow_before = database.total_ms, database.slow
        start = time.perf_counter()
        response = self.get_response(request)
        duration_ms = (time.perf_counter() - start) * 1000
        if not _recording:  # performance_monitoring off (as the flush thread last read it)
            return response
        match = request.resolver_match
        status = response.status_code
        _record(
            (
                int(time.time()) // 60 * 60,
                match.view_name if match is not None else PROBE_VIEWS_BY_PATH.get(request.path_info, "unresolved"),
                request.method or "",
                _STATUS_CLASS[status // 100] if 0 <= status < 600 else f"{status // 100}xx",
            ),
            duration_ms,
            database.total_ms - db_before,
            database.slow - slow_before,
            status >= 500,
        )
        return response
