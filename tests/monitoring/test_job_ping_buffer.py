"""The job pings' buffer: pings applied in order by a flush, once, before the sweep decides; a buffer that
fails makes the ping apply directly. Each test runs on the embedded defaults' spool file and on Redis."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from datetime import timedelta
from urllib.parse import urlsplit

import pytest
from django.db import connection
from django.test import Client
from django.utils import timezone

from monitoring.job_monitors import UNREADABLE_SINCE, apply_pings, flush_pings, job_monitors_sweep
from monitoring.jobs import PING_FAIL, PING_START, PING_SUCCESS
from monitoring.models import Heartbeat, JobMonitor, JobState
from monitoring.ping_buffer import BufferedPing, BufferLocked, BufferUnavailable, RedisBuffer, SpoolBuffer, buffer
from tests.conftest import free_port, service_url
from tests.faultproxy import FaultProxy

pytestmark = pytest.mark.django_db


def _spool(settings, tmp_path) -> None:
    """The embedded defaults' buffer: a file cache (a suite run on Redis configures Redis's), so the spool."""
    settings.VAR_DIR = tmp_path
    settings.CACHES = {
        **settings.CACHES,
        "default": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(tmp_path / "cache"),
        },
    }


@pytest.fixture(params=["spool", pytest.param("redis", marks=pytest.mark.service("redis"))])
def backend(request, settings, tmp_path) -> Iterator[str]:
    settings.VAR_DIR = tmp_path
    if request.param == "redis":
        prefix = f"test-jobpings-{uuid.uuid4().hex}"
        settings.CACHES = {
            **settings.CACHES,
            "default": {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": service_url("redis"),
                        "KEY_PREFIX": prefix},
        }  # fmt: skip
        assert isinstance(buffer(), RedisBuffer)
        yield request.param
        from django.core.cache import cache

        cache.delete_pattern("*")  # this test's prefix only
    else:
        _spool(settings, tmp_path)
        assert isinstance(buffer(), SpoolBuffer)
        yield request.param


def _monitor(**fields: object) -> JobMonitor:
    return JobMonitor.objects.create(name=f"job-{uuid.uuid4().hex[:8]}", **fields)


def _append(*pings: BufferedPing) -> None:
    for ping in pings:
        assert buffer().append(ping, limit=1000)


def test_buffered_pings_wait_for_the_flush_and_apply_in_order(backend: str) -> None:
    monitor = _monitor(period_seconds=3600)
    t0 = timezone.now()
    _append(
        BufferedPing(t0, monitor.ping_key, PING_START),
        BufferedPing(t0 + timedelta(seconds=90), monitor.ping_key, PING_SUCCESS, 0, "sent 120 mails"),
        BufferedPing(t0 + timedelta(seconds=95), monitor.ping_key, PING_START),
        BufferedPing(t0 + timedelta(seconds=100), monitor.ping_key, PING_FAIL, 3, "Traceback ..."),
    )
    assert JobMonitor.objects.get(pk=monitor.pk).state == JobState.NEW  # not applied yet

    assert flush_pings() == 4
    monitor.refresh_from_db()
    assert monitor.state == JobState.DOWN and monitor.last_exit_status == 3
    assert monitor.last_output == "Traceback ..." and monitor.last_ping_kind == PING_FAIL
    assert monitor.last_start == t0 + timedelta(seconds=95) and monitor.last_ping == t0 + timedelta(seconds=100)
    assert monitor.state_changed == t0 + timedelta(seconds=100)  # new -> up at 90 s, up -> down at 100 s
    assert flush_pings() == 0  # drained

    # Then a run that succeeds: up again, with the duration since its start.
    _append(
        BufferedPing(t0 + timedelta(seconds=150), monitor.ping_key, PING_START),
        BufferedPing(t0 + timedelta(seconds=200), monitor.ping_key, PING_SUCCESS, None, None),
    )
    assert flush_pings() == 2
    monitor.refresh_from_db()
    assert monitor.state == JobState.UP and monitor.last_duration == timedelta(seconds=50)
    assert monitor.last_output == "Traceback ..."  # a GET keeps the output


def test_applying_the_same_pings_again_changes_nothing(backend: str) -> None:
    """What a flusher that died before removing its pings from the buffer leaves for the next one."""
    monitor = _monitor()
    t0 = timezone.now()
    pings = [
        BufferedPing(t0, monitor.ping_key, PING_START),
        BufferedPing(t0 + timedelta(seconds=30), monitor.ping_key, PING_SUCCESS, None, "ok"),
    ]
    assert apply_pings(pings) == 2
    JobMonitor.objects.filter(pk=monitor.pk).update(last_output="changed since")
    assert apply_pings(pings) == 0
    monitor.refresh_from_db()
    assert monitor.last_output == "changed since" and monitor.last_duration == timedelta(seconds=30)
    # An older ping that arrives late is older news: skipped.
    assert apply_pings([BufferedPing(t0 + timedelta(seconds=10), monitor.ping_key, PING_FAIL, 1, "x")]) == 0
    assert JobMonitor.objects.get(pk=monitor.pk).state == JobState.UP


def test_a_flush_that_fails_leaves_its_pings_for_the_next(backend: str) -> None:
    monitor = _monitor()
    _append(BufferedPing(timezone.now(), monitor.ping_key, PING_SUCCESS))

    def broken(pings: Sequence[BufferedPing]) -> int:
        raise RuntimeError("the database went away")

    with pytest.raises(RuntimeError):
        buffer().drain(broken, wait=1)
    assert JobMonitor.objects.get(pk=monitor.pk).state == JobState.NEW
    assert flush_pings() == 1
    assert JobMonitor.objects.get(pk=monitor.pk).state == JobState.UP


def test_the_sweep_applies_buffered_pings_before_it_decides(backend: str) -> None:
    pinged = timezone.now() - timedelta(hours=2)
    monitor = _monitor(period_seconds=3600, grace_seconds=600, state=JobState.UP, last_ping=pinged)
    now = timezone.now()
    _append(BufferedPing(now - timedelta(seconds=1), monitor.ping_key, PING_SUCCESS))
    assert job_monitors_sweep(now=now) == 0
    monitor.refresh_from_db()
    assert monitor.state == JobState.UP and monitor.last_ping == now - timedelta(seconds=1)
    # Without the buffered ping it is down.
    assert job_monitors_sweep(now=now + timedelta(hours=2)) == 1
    assert JobMonitor.objects.get(pk=monitor.pk).state == JobState.DOWN


def test_the_sweep_moves_nothing_at_once_when_the_buffer_cannot_be_read(settings) -> None:
    """A ping buffered before the store went down may be waiting there: on the first sweep that finds it
    unreadable, every monitor is judged as if a ping had come at that moment, so nothing moves yet."""
    monitor = _monitor(period_seconds=3600, grace_seconds=600, state=JobState.UP,
                       last_ping=timezone.now() - timedelta(hours=2))  # fmt: skip
    settings.CACHES = {
        **settings.CACHES,
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{free_port()}/0",  # nothing listens there
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.5, "SOCKET_TIMEOUT": 0.5},
        },
    }
    with pytest.raises(BufferUnavailable):
        flush_pings()
    assert job_monitors_sweep() == 0
    assert JobMonitor.objects.get(pk=monitor.pk).state == JobState.UP


def test_a_ping_is_applied_directly_when_the_spool_cannot_be_written(client: Client, settings, tmp_path) -> None:
    _spool(settings, tmp_path)
    (tmp_path / "jobpings").write_text("a file where the spool directory should be")
    monitor = _monitor()
    with pytest.raises(BufferUnavailable):
        buffer().append(BufferedPing(timezone.now(), monitor.ping_key, PING_SUCCESS), limit=10)
    response = client.post(f"{monitor.ping_path()}/start", data=b"starting", content_type="text/plain")
    assert (response.status_code, response.content) == (200, b"OK\n")
    monitor.refresh_from_db()
    assert monitor.last_start is not None and monitor.last_output == "starting"


def test_two_flushers_never_take_the_same_pings(backend: str) -> None:
    keys = [uuid.uuid4() for _ in range(3)]
    t0 = timezone.now()
    sent = [BufferedPing(t0 + timedelta(milliseconds=i), keys[i % 3], PING_SUCCESS, None, str(i)) for i in range(60)]
    taken: list[list[BufferedPing]] = [[], []]
    start = threading.Barrier(2)
    errors: list[BaseException] = []

    def flusher(index: int) -> None:
        def collect(pings: Sequence[BufferedPing]) -> int:
            taken[index].extend(pings)
            time.sleep(0.05)  # hold the buffer while the other flusher tries
            return len(pings)

        try:
            start.wait()
            for _ in range(3):
                buffer().drain(collect, wait=10)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    _append(*sent[:30])
    threads = [threading.Thread(target=flusher, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    _append(*sent[30:])  # while they flush
    for thread in threads:
        thread.join()

    def rest(pings: Sequence[BufferedPing]) -> int:
        taken[0].extend(pings)
        return len(pings)

    buffer().drain(rest, wait=10)  # what came after their last look
    assert errors == []
    together = taken[0] + taken[1]
    assert sorted(p.output or "" for p in together) == sorted(p.output or "" for p in sent)  # each once
    for flushed in taken:  # and each flusher saw them in the order they came
        assert flushed == sorted(flushed, key=lambda p: p.at)


def test_the_ping_answers_404_for_a_deleted_monitor(client: Client, django_capture_on_commit_callbacks) -> None:
    monitor = _monitor()
    assert client.get(monitor.ping_path()).status_code == 200  # the key copy now holds it
    with django_capture_on_commit_callbacks(execute=True):
        monitor.delete()
    assert client.get(monitor.ping_path()).status_code == 404


def test_a_new_monitor_is_known_before_the_key_copy_reloads(client: Client) -> None:
    first = _monitor()
    assert client.get(first.ping_path()).status_code == 200  # loads the copy
    second = _monitor()  # its bump waits for a commit that this test never makes
    assert client.get(second.ping_path()).status_code == 200
    assert JobMonitor.objects.get(pk=second.pk).state == JobState.UP


def test_pings_through_the_url_on_each_buffer(backend: str, client: Client, settings) -> None:
    monitor = _monitor()
    assert client.get(f"{monitor.ping_path()}/start").status_code == 200
    assert client.post(monitor.ping_path(), data=b"done", content_type="text/plain").status_code == 200
    monitor.refresh_from_db()
    assert monitor.state == JobState.UP and monitor.last_output == "done" and monitor.last_duration is not None
    settings.JOB_PING_RATE_PER_SECOND = 2
    codes = [client.get(monitor.ping_path()).status_code for _ in range(6)]
    assert codes.count(429) >= 2


def _redis_through(proxy: FaultProxy, settings) -> None:
    db = urlsplit(service_url("redis")).path.strip("/") or "0"
    settings.CACHES = {
        **settings.CACHES,
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{proxy.port}/{db}",
            "KEY_PREFIX": f"test-jobpings-{uuid.uuid4().hex}",
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.5, "SOCKET_TIMEOUT": 0.5},
        },
    }
    assert isinstance(buffer(), RedisBuffer)


@pytest.mark.service("redis")
def test_while_redis_is_down_a_monitor_moves_only_as_a_ping_buffered_before_would_let_it(settings) -> None:
    """Hourly, 10 min grace, last ping at t0 in the database; a success at t0+20 min waits in Redis when
    Redis goes away, and the first sweep to find it unreadable runs at t0+30 min. Judged as if a ping had
    come at t0+30 min, the monitor stays up at t0+75 min (where the database alone says late, but the
    waiting ping says up), goes late at t0+90 and down at t0+100: it never moves further than the waiting
    ping allows, and a job that stopped pinging still goes down."""
    parts = urlsplit(service_url("redis"))
    t0 = timezone.now().replace(microsecond=0) - timedelta(days=1)
    monitor = _monitor(period_seconds=3600, grace_seconds=600, state=JobState.UP, last_ping=t0)
    with FaultProxy(parts.hostname or "127.0.0.1", parts.port or 6379) as proxy:
        _redis_through(proxy, settings)
        assert job_monitors_sweep(now=t0 + timedelta(minutes=10)) == 0
        _append(BufferedPing(t0 + timedelta(minutes=20), monitor.ping_key, PING_SUCCESS))
        proxy.refuse()
        with pytest.raises(BufferUnavailable) as raised:
            flush_pings(wait=0.5)
        assert not isinstance(raised.value, BufferLocked)  # the store is down, no other flush holds it

        def state_after_sweep(minutes: int) -> str:
            job_monitors_sweep(now=t0 + timedelta(minutes=minutes))
            return JobMonitor.objects.get(pk=monitor.pk).state

        assert state_after_sweep(30) == JobState.UP
        assert Heartbeat.objects.get(name=UNREADABLE_SINCE).last_seen == t0 + timedelta(minutes=30)
        assert state_after_sweep(75) == JobState.UP
        assert state_after_sweep(89) == JobState.UP
        assert state_after_sweep(91) == JobState.LATE
        assert state_after_sweep(99) == JobState.LATE
        assert state_after_sweep(101) == JobState.DOWN

        proxy.heal()
        # Redis back: the waiting ping is applied (t0+20 min, itself past its deadline: still down).
        assert state_after_sweep(102) == JobState.DOWN
        assert JobMonitor.objects.get(pk=monitor.pk).last_ping == t0 + timedelta(minutes=20)
        assert not Heartbeat.objects.filter(name=UNREADABLE_SINCE).exists()
        from django.core.cache import cache

        cache.delete_pattern("*")  # this test's prefix only


@pytest.mark.service("redis")
def test_a_new_outage_counts_from_its_own_first_sweep(settings) -> None:
    """The moment kept for one outage goes when a sweep reads the buffer again: the next outage's
    monitors are judged from that outage's first sweep, not the earlier one's."""
    parts = urlsplit(service_url("redis"))
    t0 = timezone.now().replace(microsecond=0) - timedelta(days=1)
    monitor = _monitor(period_seconds=3600, grace_seconds=600, state=JobState.UP, last_ping=t0)
    with FaultProxy(parts.hostname or "127.0.0.1", parts.port or 6379) as proxy:
        _redis_through(proxy, settings)
        proxy.refuse()
        job_monitors_sweep(now=t0 - timedelta(minutes=30))  # an earlier outage, before the last ping
        proxy.heal()
        job_monitors_sweep(now=t0 + timedelta(minutes=5))
        proxy.refuse()
        job_monitors_sweep(now=t0 + timedelta(minutes=40))
        assert Heartbeat.objects.get(name=UNREADABLE_SINCE).last_seen == t0 + timedelta(minutes=40)
        job_monitors_sweep(now=t0 + timedelta(minutes=75))
        assert JobMonitor.objects.get(pk=monitor.pk).state == JobState.UP
        proxy.heal()
        from django.core.cache import cache

        cache.delete_pattern("*")


def test_a_flush_holding_the_buffer_makes_the_sweep_wait_for_the_next_minute(settings, tmp_path, monkeypatch) -> None:
    """Another flush holds the buffer (the store works, pings may wait there): nothing moves, and no
    outage is recorded."""
    from monitoring import job_monitors

    _spool(settings, tmp_path)
    monkeypatch.setattr(job_monitors, "SWEEP_FLUSH_WAIT", 0.2)
    t0 = timezone.now().replace(microsecond=0) - timedelta(days=1)
    monitor = _monitor(period_seconds=3600, grace_seconds=600, state=JobState.UP, last_ping=t0)
    spool = buffer()
    assert isinstance(spool, SpoolBuffer)
    holding, release = threading.Event(), threading.Event()

    def hold(pings: Sequence[BufferedPing]) -> int:
        holding.set()
        release.wait(10)
        return 0

    _append(BufferedPing(t0 - timedelta(hours=1), monitor.ping_key, PING_SUCCESS))
    other = threading.Thread(target=lambda: spool.drain(hold, wait=1))
    other.start()
    try:
        assert holding.wait(10)
        with pytest.raises(BufferLocked):
            flush_pings(wait=0.1)
        assert job_monitors_sweep(now=t0 + timedelta(hours=2)) == 0
    finally:
        release.set()
        other.join(10)
    assert JobMonitor.objects.get(pk=monitor.pk).state == JobState.UP
    assert not Heartbeat.objects.filter(name=UNREADABLE_SINCE).exists()
    assert job_monitors_sweep(now=t0 + timedelta(hours=2)) == 1


def test_a_ping_buffered_while_the_sweep_flushes_is_applied_before_the_monitor_goes_down(backend: str) -> None:
    """The job pings while the sweep's first flush runs (here: at that flush's first query), too late for
    it: the sweep flushes again before it moves anything, so the ping wins and the monitor stays up."""
    t0 = timezone.now().replace(microsecond=0) - timedelta(days=1)
    now = t0 + timedelta(minutes=71)  # past the hour and its 10 min grace: down without the ping
    monitor = _monitor(period_seconds=3600, grace_seconds=600, state=JobState.UP, last_ping=t0)
    other = _monitor(period_seconds=3600)
    _append(BufferedPing(now - timedelta(minutes=5), other.ping_key, PING_SUCCESS))  # gives the flush a query
    late_ping = BufferedPing(now - timedelta(seconds=1), monitor.ping_key, PING_SUCCESS)
    sent = []

    def concurrent_ping(execute, sql, params, many, context):
        if not sent and "monitoring_jobmonitor" in sql.lower():
            sent.append(True)
            buffer().append(late_ping, limit=1000)  # a request in another process, during the flush
        return execute(sql, params, many, context)

    with connection.execute_wrapper(concurrent_ping):
        assert job_monitors_sweep(now=now) == 0
    assert sent
    found = JobMonitor.objects.get(pk=monitor.pk)
    assert found.state == JobState.UP and found.last_ping == late_ping.at
