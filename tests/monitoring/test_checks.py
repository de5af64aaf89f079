"""The checks and the runner: parallel, each with a timeout, under one deadline."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.utils import timezone

from monitoring.checks import (
    COMPREHENSIVE,
    FAIL,
    PASS,
    WARN,
    Check,
    Outcome,
    check_beat,
    check_disk,
    check_migrations,
    registered_checks,
    run_checks,
    worst,
)
from monitoring.models import Heartbeat, MonitoredEndpoint


def sleeper(seconds: float, status: str = PASS):
    def run() -> Outcome:
        time.sleep(seconds)
        return Outcome(status, seconds * 1000, "ms", "slept")

    return run


def test_a_hung_check_fails_with_timed_out_and_holds_nothing_up(settings):
    settings.HEALTH_CHECK_TIMEOUT = 0.3
    checks = [Check("hung", "responseTime", "component", sleeper(5)), Check("quick", "x", "component", sleeper(0))]
    started = time.perf_counter()
    hung, quick = run_checks(checks)
    assert time.perf_counter() - started < 2  # the hung check still sleeps in its thread
    assert hung.status == FAIL and hung.output.startswith("timed out after")
    assert quick.status == PASS


def test_checks_run_in_parallel(settings):
    settings.HEALTH_CHECK_TIMEOUT = 5
    checks = [Check(f"c{i}", "x", "component", sleeper(0.4)) for i in range(6)]
    started = time.perf_counter()
    results = run_checks(checks)
    assert time.perf_counter() - started < 1.5  # not 6 x 0.4 s
    assert [r.status for r in results] == [PASS] * 6


@pytest.mark.django_db  # after a failure the runner drops the thread's database connection if broken
def test_a_check_with_its_own_timeout_may_take_longer_than_the_default(settings):
    settings.HEALTH_CHECK_TIMEOUT = 0.3
    slow = Check("endpoint:slow", "responseTime", "http", sleeper(0.6), timeout_seconds=1.0)
    plain = Check("plain", "x", "component", sleeper(0.6))
    results = {r.component: r for r in run_checks([plain, slow], deadline_seconds=2.0)}
    assert results["endpoint:slow"].status == PASS
    assert results["plain"].status == FAIL and "timed out" in results["plain"].output
    # The overall deadline still holds.
    (capped,) = run_checks([slow], deadline_seconds=0.3)
    assert capped.status == FAIL and "timed out" in capped.output


def test_an_exception_is_a_fail_result():
    def broken() -> Outcome:
        raise ConnectionError("connection refused\nsecond line")

    [result] = run_checks([Check("db", "x", "datastore", broken)])
    assert result.status == FAIL and result.output == "ConnectionError: connection refused"


def test_worst():
    assert worst([PASS, WARN]) == WARN and worst([WARN, FAIL, PASS]) == FAIL and worst([]) == PASS


@pytest.mark.django_db
def test_beat_heartbeat_freshness():
    assert check_beat().status == FAIL
    Heartbeat.objects.create(name="celery", last_seen=timezone.now() - timedelta(seconds=20), hostname="w1")
    assert check_beat().status == PASS
    Heartbeat.objects.update(last_seen=timezone.now() - timedelta(minutes=10))
    outcome = check_beat()
    assert outcome.status == FAIL and "limit" in outcome.output


def test_disk_thresholds(settings):
    settings.DISK_FREE_WARN_PERCENT, settings.DISK_FREE_FAIL_PERCENT = 0, 0
    assert check_disk().status == PASS
    settings.DISK_FREE_WARN_PERCENT = 101
    assert check_disk().status == WARN
    settings.DISK_FREE_FAIL_PERCENT = 101
    assert check_disk().status == FAIL


@pytest.mark.django_db
def test_migrations_are_all_applied():
    assert check_migrations().status == PASS


@pytest.mark.django_db
def test_endpoints_operators_add_are_checked(http_sink, settings):
    base = f"http://127.0.0.1:{http_sink.port}"
    MonitoredEndpoint.objects.create(name="api", url=base + "/health", body_contains="WingmanMatch")
    MonitoredEndpoint.objects.create(name="web", url=base + "/", body_contains="Next.js")
    MonitoredEndpoint.objects.create(name="wrong-status", url=base + "/", expected_status=204)
    MonitoredEndpoint.objects.create(name="frontend", url="http://127.0.0.1:1/", timeout_ms=500)
    MonitoredEndpoint.objects.create(name="off", url="http://127.0.0.1:1/", enabled=False)
    results = {r.component: r for r in run_checks(registered_checks(COMPREHENSIVE))}
    assert "endpoint:off" not in results
    assert results["endpoint:api"].status == PASS and results["endpoint:api"].unit == "ms"
    assert results["endpoint:web"].status == FAIL and "without 'Next.js'" in results["endpoint:web"].output
    assert "answered 200, expected 204" in results["endpoint:wrong-status"].output
    assert sorted(r.path for r in http_sink.requests) == ["/", "/", "/health"]
    assert results["endpoint:frontend"].status == FAIL
    for name in ["database", "cache", "broker", "celery-workers", "celery-beat", "disk", "migrations", "backups"]:
        assert name in results
    # Checks run in threads of their own, which see committed rows only: the target "default" with no
    # verified backup yet (within its RPO: pass), or (after a transactional test emptied the tables) no
    # target (warn); tests/monitoring/test_backup_alerts.py checks the outputs themselves.
    assert results["backups"].status in (PASS, WARN) and results["backups"].output


@pytest.mark.django_db
def test_enhanced_monitoring_flag_gates_the_extra_checks(django_capture_on_commit_callbacks):
    from controlplane.audit import Actor
    from flags.services import flag_create, flag_update

    MonitoredEndpoint.objects.create(name="api", url="http://127.0.0.1:1/", timeout_ms=200)
    extra = {"sentry", "alert-channels", "endpoint:api"}
    # No such flag yet: the extra checks run (the default is on).
    assert extra <= {c.component for c in registered_checks(COMPREHENSIVE)}
    with django_capture_on_commit_callbacks(execute=True):
        flag_create(data={"name": "enhanced_monitoring", "enabled": False}, actor=Actor.system("tests"))
    names = {c.component for c in registered_checks(COMPREHENSIVE)}
    assert not extra & names
    assert {"database", "cache", "broker", "disk"} <= names
    with django_capture_on_commit_callbacks(execute=True):
        flag_update(
            name="enhanced_monitoring", changes={"enabled": True, "rollout_percent": 100}, actor=Actor.system("tests")
        )
    assert extra <= {c.component for c in registered_checks(COMPREHENSIVE)}


def test_concurrent_cache_probes_do_not_trip_each_other():
    """Probes from several workers at once (threads here) each read back their own value."""
    import threading

    from monitoring.checks import check_cache

    failures: list[str] = []

    def probe() -> None:
        for _ in range(100):
            outcome = check_cache()
            if outcome.status == FAIL:
                failures.append(outcome.output)

    threads = [threading.Thread(target=probe) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []


def test_idle_pool_threads_are_reused():
    from monitoring.checks import _pool

    for _ in range(20):
        run_checks([Check("quick", "x", "component", sleeper(0))])
    started = _pool._started
    for _ in range(20):
        run_checks([Check("quick", "x", "component", sleeper(0))])
    assert _pool._started == started
