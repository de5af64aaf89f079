"""The health checks: a registry, and a runner that runs them in parallel under one deadline.

Each check returns pass/warn/fail with an observed value, its unit and a message. A check that
does not answer in time is reported ``fail`` ("timed out after N ms") and never holds up the caller.
"""

from __future__ import annotations

import base64
import functools
import logging
import os
import queue
import shutil
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from django.conf import settings
from django.db import InterfaceError, OperationalError, close_old_connections, connection

from controlplane import outbound
from controlplane.redaction import redact_url, redact_urls

logger = logging.getLogger(__name__)

PASS, WARN, FAIL = "pass", "warn", "fail"
_SEVERITY = {PASS: 0, WARN: 1, FAIL: 2}

# Groups: "ready" (database, cache), "enhanced" (ready + integrations), "comprehensive" (everything).
READY, ENHANCED, COMPREHENSIVE = "ready", "enhanced", "comprehensive"


@dataclass
class Outcome:
    status: str
    value: float | None = None
    unit: str = ""
    output: str = ""


@dataclass
class Result:
    component: str
    measurement: str
    component_type: str
    status: str
    value: float | None
    unit: str
    output: str
    time: datetime

    @property
    def key(self) -> str:
        return f"{self.component}:{self.measurement}"


@dataclass(frozen=True)
class Check:
    component: str
    measurement: str
    component_type: str
    run: Callable[[], Outcome]
    groups: frozenset[str] = field(default_factory=lambda: frozenset({COMPREHENSIVE}))
    # Extra checks that the enhanced_monitoring flag switches on and off.
    enhanced_only: bool = False
    # Its own time limit (an HTTP endpoint's timeout), instead of HEALTH_CHECK_TIMEOUT; the overall
    # deadline of the run still applies.
    timeout_seconds: float | None = None


def worst(statuses: Iterable[str]) -> str:
    return max(statuses, key=_SEVERITY.__getitem__, default=PASS)


def _ms_since(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 2)


# --- The checks -----------------------------------------------------------------------------------


def check_database() -> Outcome:
    start = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    elapsed = _ms_since(start)
    status = WARN if elapsed > settings.HEALTH_SLOW_MS else PASS
    return Outcome(status, elapsed, "ms", f"{connection.vendor} answered in {elapsed} ms")


def check_cache() -> Outcome:
    from django.core.cache import cache

    start = time.perf_counter()
    token = os.urandom(8).hex()
    # A key per process and thread: concurrent probes in other workers never overwrite this one's
    # value between its set and its get, and the keys stay few (no delete needed).
    key = f"health:probe:{os.getpid()}:{threading.get_ident()}"
    cache.set(key, token, 60)
    if cache.get(key) != token:
        return Outcome(FAIL, _ms_since(start), "ms", "the cache did not return what was written")
    elapsed = _ms_since(start)
    return Outcome(WARN if elapsed > settings.HEALTH_SLOW_MS else PASS, elapsed, "ms", f"set and get in {elapsed} ms")


def check_broker() -> Outcome:
    from controlplane.celery import app

    start = time.perf_counter()
    with app.connection_for_write() as conn:
        # kombu's stubs say whole seconds; kombu compares the timeout with elapsed time, fractions included.
        conn.ensure_connection(max_retries=1, timeout=settings.HEALTH_CHECK_TIMEOUT)  # type: ignore[arg-type]
    elapsed = _ms_since(start)
    return Outcome(PASS, elapsed, "ms", f"{conn.transport_cls} broker connected in {elapsed} ms")


def check_workers() -> Outcome:
    """The workers whose own timer wrote a heartbeat lately (monitoring/watchdog.py).

    Not a broadcast ping: on the filesystem broker a ping's replies are polled once a second, so it
    takes as long as the check's whole timeout and failed on a healthy install.
    """
    from django.utils import timezone

    from monitoring.models import Heartbeat
    from monitoring.services import WORKER_PREFIX

    limit = settings.WORKER_HEARTBEAT_SECONDS * 3
    now = timezone.now()
    workers = list(Heartbeat.objects.filter(name__startswith=WORKER_PREFIX).order_by("-last_seen"))
    alive = [w for w in workers if (now - w.last_seen).total_seconds() <= limit]
    if alive:
        names = ", ".join(w.hostname for w in alive[:5]) + (", ..." if len(alive) > 5 else "")
        return Outcome(PASS, len(alive), "workers", f"{len(alive)} worker(s) alive: {names}")
    if not workers:
        return Outcome(FAIL, 0, "workers", "no Celery worker has recorded a heartbeat: is a worker running?")
    age = (now - workers[0].last_seen).total_seconds()
    return Outcome(
        FAIL, 0, "workers", f"no worker heartbeat within {limit} s (last from {workers[0].hostname}, {age:.0f} s ago)"
    )


def beat_limits() -> tuple[int, int]:
    """Seconds without a heartbeat after which beat counts as late (warn) and as down (fail)."""
    interval = settings.HEARTBEAT_INTERVAL_SECONDS
    return interval * 2, interval * 3


def check_beat() -> Outcome:
    """Beat's heartbeat: beat sends the task, a worker runs it. One missed beat is a warning; three
    are a failure (the "celery beat silent" rule fires on the first failure)."""
    from django.utils import timezone

    from monitoring.models import Heartbeat

    beat = Heartbeat.objects.filter(name="celery").first()
    if beat is None:
        return Outcome(FAIL, None, "s", "no heartbeat yet: are beat and a worker running?")
    age = (timezone.now() - beat.last_seen).total_seconds()
    warn_after, fail_after = beat_limits()
    if age > fail_after:
        return Outcome(FAIL, round(age, 1), "s", f"last heartbeat {age:.0f} s ago (limit {fail_after} s)")
    if age > warn_after:
        return Outcome(WARN, round(age, 1), "s", f"last heartbeat {age:.0f} s ago: late (limit {fail_after} s)")
    return Outcome(PASS, round(age, 1), "s", f"last heartbeat {age:.0f} s ago from {beat.hostname}")


def check_disk() -> Outcome:
    usage = shutil.disk_usage(settings.VAR_DIR)
    free = round(usage.free / usage.total * 100, 1)
    status = (
        FAIL if free < settings.DISK_FREE_FAIL_PERCENT else WARN if free < settings.DISK_FREE_WARN_PERCENT else PASS
    )
    return Outcome(status, free, "%", f"{free} % free ({usage.free // 2**30} GiB) where the control plane keeps data")


def check_migrations() -> Outcome:
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connection)
    plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    if plan:
        names = ", ".join(f"{m.app_label}.{m.name}" for m, _ in plan[:3])
        return Outcome(FAIL, len(plan), "migrations", f"{len(plan)} unapplied: {names}; run manage.py migrate")
    return Outcome(PASS, 0, "migrations", "all migrations applied")


def check_backup_age() -> Outcome:
    """The recovery readiness of every enabled backup target, worst first (read through its selector)."""
    from backups.selectors import all_readiness

    targets = all_readiness()
    if not targets:
        return Outcome(WARN, None, "h", "no enabled backup target")
    ages = [t.age_hours for t in targets if t.age_hours is not None]
    oldest = round(max(ages), 2) if len(ages) == len(targets) else None
    failing = [t for t in targets if not t.rpo_met and not t.first_pending]
    if failing:
        return Outcome(FAIL, oldest, "h", "; ".join(f"{t.target.name}: {t.problems[0]}" for t in failing))
    # A new target without a backup yet is within its recovery point objective until its first backup is
    # RPO hours late: at risk only if something else is wrong (a failure), as the fail rule above reads it.
    at_risk = [t for t in targets if t.problems and not (t.first_pending and t.problems == ["no verified backup"])]
    if at_risk:
        return Outcome(WARN, oldest, "h", "; ".join(f"{t.target.name}: {', '.join(t.problems)}" for t in at_risk))
    pending = [t for t in targets if t.first_pending]
    if pending:
        due = "; ".join(
            f"{t.target.name}: no verified backup yet, within its RPO until "
            f"{t.target.created_at + timedelta(hours=t.target.rpo_hours):%Y-%m-%d %H:%M %Z}"
            for t in pending
        )
        return Outcome(PASS, oldest, "h", due)
    return Outcome(PASS, oldest, "h", f"{len(targets)} target(s) verified within their RPO and recovery window")


def check_sentry() -> Outcome:
    if settings.SENTRY_DSN:
        return Outcome(PASS, 1, "", f"reporting to Sentry (environment {settings.SENTRY_ENVIRONMENT})")
    if not settings.PRODUCTION:
        # A development install (make run) is healthy without Sentry; production is not.
        return Outcome(PASS, 0, "", "SENTRY_DSN is not set (development): errors are only logged")
    return Outcome(WARN, 0, "", "SENTRY_DSN is not set: errors are only logged")


def check_alert_channels() -> Outcome:
    from alerting.selectors import enabled_channel_count

    channels = enabled_channel_count()
    if not channels:
        if not settings.PRODUCTION:
            # make run's first minutes are healthy without a channel; production alerts must reach someone.
            return Outcome(
                PASS, 0, "channels", "no enabled alert channel (development): alerts show on the dashboard only"
            )
        return Outcome(WARN, 0, "channels", "no enabled alert channel: alerts notify nobody")
    return Outcome(PASS, channels, "channels", f"{channels} enabled alert channel(s)")


# A 3xx is the endpoint's answer: following it would probe (and send the endpoint's credentials to)
# an address the operator never named.
_endpoint_opener = outbound.opener


def _endpoint_request(url: str) -> urllib.request.Request:
    """A GET of ``url``; a user:password@ in it is sent as Basic authorization (urllib would take it
    for part of the host name)."""
    parts = urlsplit(url)
    headers = {"User-Agent": "controlplane-uptime/1"}
    if "@" in parts.netloc:
        userinfo, _, host = parts.netloc.rpartition("@")
        user, _, password = userinfo.partition(":")
        credentials = f"{unquote(user)}:{unquote(password)}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(credentials).decode("ascii")
        url = urlunsplit(parts._replace(netloc=host))
    return urllib.request.Request(url, headers=headers)  # noqa: S310 - http(s) only (the model validates)


def endpoint_check(url: str, expected_status: int, timeout_ms: int, body_contains: str) -> Callable[[], Outcome]:
    """The check of an endpoint operators added. Its output shows the URL redacted: any monitoring:read
    token reads it, and the URL may carry a password or a token in its query."""
    shown = redact_url(url)

    def run() -> Outcome:
        start = time.perf_counter()
        redirect = ""
        try:
            with _endpoint_opener.open(_endpoint_request(url), timeout=timeout_ms / 1000) as response:
                status, body = response.status, response.read(1_000_000)
        except urllib.error.HTTPError as error:
            status, body = error.code, error.read(1_000_000)  # an HTTPError without a body reads as b""
            if 300 <= status < 400:
                redirect = f"redirect to {redact_url(error.headers.get('Location') or '(no Location)')}"
        except (urllib.error.URLError, TimeoutError, OSError, ValueError) as error:
            reason = getattr(error, "reason", error)
            return Outcome(FAIL, _ms_since(start), "ms", redact_urls(f"{shown}: {reason}"))
        elapsed = _ms_since(start)
        answer = f"{status} ({redirect})" if redirect else str(status)
        # A redirect counts like any other status: it passes only where it is the expected one.
        if status != expected_status:
            return Outcome(FAIL, elapsed, "ms", f"{shown} answered {answer}, expected {expected_status}")
        if body_contains and body_contains.encode() not in body:
            return Outcome(FAIL, elapsed, "ms", f"{shown} answered without {body_contains!r}")
        return Outcome(
            WARN if elapsed > settings.HEALTH_SLOW_MS * 5 else PASS, elapsed, "ms", f"{answer} in {elapsed} ms"
        )

    return run


BUILT_IN = [
    Check("database", "responseTime", "datastore", check_database, frozenset({READY, ENHANCED, COMPREHENSIVE})),
    Check("cache", "responseTime", "datastore", check_cache, frozenset({READY, ENHANCED, COMPREHENSIVE})),
    Check("broker", "responseTime", "component", check_broker),
    Check("celery-workers", "count", "component", check_workers),
    Check("celery-beat", "heartbeatAge", "component", check_beat, frozenset({ENHANCED, COMPREHENSIVE})),
    Check("disk", "freePercent", "system", check_disk),
    Check("migrations", "unapplied", "component", check_migrations),
    Check("backups", "latestVerifiedAge", "component", check_backup_age),
    Check("sentry", "configured", "component", check_sentry, frozenset({ENHANCED, COMPREHENSIVE}), enhanced_only=True),
    Check(
        "alert-channels",
        "enabled",
        "component",
        check_alert_channels,
        frozenset({ENHANCED, COMPREHENSIVE}),
        enhanced_only=True,
    ),  # fmt: skip
]


def registered_checks(group: str) -> list[Check]:
    """The checks of a group: the built-in ones, then the HTTP endpoints operators added in admin."""
    if group == READY:  # the load balancer's probe: database and cache, nothing read first
        return [c for c in BUILT_IN if READY in c.groups]
    from flags.selectors import ENHANCED_MONITORING, is_on
    from monitoring.models import MonitoredEndpoint

    enhanced = is_on(ENHANCED_MONITORING, default=True)
    checks = [c for c in BUILT_IN if group in c.groups and (enhanced or not c.enhanced_only)]
    if group == COMPREHENSIVE and enhanced:
        for endpoint in MonitoredEndpoint.objects.filter(enabled=True):
            run = endpoint_check(endpoint.url, endpoint.expected_status, endpoint.timeout_ms, endpoint.body_contains)
            checks.append(
                Check(
                    f"endpoint:{endpoint.name}",
                    "responseTime",
                    "http",
                    run,
                    enhanced_only=True,
                    # The HTTP client's own timeout says why first (queueing in the pool included).
                    timeout_seconds=endpoint.timeout_ms / 1000 + 0.5,
                )
            )
    return checks


# --- The runner -----------------------------------------------------------------------------------


class _DaemonPool:
    """A fixed pool of daemon threads. Unlike ThreadPoolExecutor's, its threads are not joined at
    exit, so a check hung on a dead server never keeps a process from stopping."""

    def __init__(self, size: int) -> None:
        self._queue: queue.SimpleQueue[tuple[Future, Callable[[], Any]]] = queue.SimpleQueue()
        self._size = size
        self._started = 0
        self._idle = 0
        self._lock = threading.Lock()

    def submit(self, fn: Callable[[], Any]) -> Future:
        future: Future = Future()
        with self._lock:
            # A new thread only when none is idle: each thread keeps a database connection.
            if self._idle == 0 and self._started < self._size:
                self._started += 1
                self._idle += 1
                threading.Thread(target=self._work, name=f"health-{self._started}", daemon=True).start()
            self._idle -= 1
        self._queue.put((future, fn))
        return future

    def _work(self) -> None:
        while True:
            future, fn = self._queue.get()
            if not future.set_running_or_notify_cancel():
                with self._lock:
                    self._idle += 1
                continue
            try:
                future.set_result(fn())
            except BaseException as exc:  # handed to the caller through the future
                future.set_exception(exc)
            finally:
                with self._lock:
                    self._idle += 1


# Shared by every request of the process; hung checks keep a thread each until they return, so
# there are enough threads that a few hung ones do not starve the rest.
_pool = _DaemonPool(32)


def _failed(exc: Exception) -> Outcome:
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return Outcome(FAIL, None, "", f"{type(exc).__name__}: {first_line}"[:500])


def _guarded(check: Check) -> Outcome:
    kept = connection.connection is not None  # this thread's connection from an earlier run
    try:
        return check.run()
    except (OperationalError, InterfaceError) as exc:
        # This pool thread keeps its database connection between runs; a database restart, a failover
        # or an idle timeout kills it under the thread. Drop it and try once more on a new one, so a
        # healthy database is not reported failed once per thread after every restart. A connection
        # made just now that failed is the answer: no second wait on a database that is down.
        _drop_connection()
        if not kept:
            return _failed(exc)
    except Exception as exc:  # a failing dependency is a fail result, never an error page
        # Drop this thread's connection if the failure broke it; a healthy one is kept for the next
        # run (closing it after every check would cost a reconnect or a ping each time). Tidying up
        # never replaces the check's own result.
        try:
            close_old_connections()
        except Exception:  # noqa: BLE001, S110
            pass
        return _failed(exc)
    try:
        return check.run()
    except Exception as exc:
        _drop_connection()
        return _failed(exc)


def _drop_connection() -> None:
    try:
        connection.close()
    except Exception:  # noqa: BLE001, S110 - a connection that is already broken may fail to close
        pass


def _pooled_run(check: Check) -> Outcome:
    try:
        return _guarded(check)
    finally:
        # With a connection pool (DATABASE_POOL_SIZE) a check gives its connection back: kept by the
        # thread as above, a few threads would hold the whole pool and every other check time out.
        if getattr(connection, "pool", None) is not None:
            _drop_connection()


def run_checks(checks: list[Check], *, deadline_seconds: float | None = None) -> list[Result]:
    """Run the checks in parallel; each gets the check timeout, all together the overall deadline."""
    per_check = settings.HEALTH_CHECK_TIMEOUT
    overall = deadline_seconds if deadline_seconds is not None else settings.HEALTH_DEADLINE
    started = time.perf_counter()
    futures = [(check, _pool.submit(functools.partial(_pooled_run, check))) for check in checks]
    results: list[Result] = []
    for check, future in futures:
        limit = check.timeout_seconds if check.timeout_seconds is not None else per_check
        elapsed = time.perf_counter() - started
        remaining = max(0.0, min(limit - elapsed, overall - elapsed))
        try:
            outcome = future.result(timeout=remaining)
        except FutureTimeout:
            waited = round((time.perf_counter() - started) * 1000)
            outcome = Outcome(FAIL, None, "ms", f"timed out after {waited} ms")
        results.append(
            Result(
                check.component,
                check.measurement,
                check.component_type,
                outcome.status,
                outcome.value,
                outcome.unit,
                # Any check's message may quote a URL (an exception's text): none shows a password.
                redact_urls(outcome.output),
                datetime.now(UTC),
            )  # fmt: skip
        )
    return results


def run_group(group: str, *, deadline_seconds: float | None = None) -> list[Result]:
    return run_checks(registered_checks(group), deadline_seconds=deadline_seconds)


__all__ = ["COMPREHENSIVE", "ENHANCED", "READY", "Check", "Outcome", "Result", "run_checks", "run_group", "worst"]
