"""The scrape source's worker against exporters on 127.0.0.1: rollups per minute and route, counter
resets, replicas summed, every way a scrape fails, the bearer token, and the signals read back."""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from django.core.management import call_command
from django.db.models.signals import post_save
from django.utils import timezone

from monitoring.models import MetricSource, Service, ServiceHour, ServiceMinute
from monitoring.scrape import (
    OTHER_ROUTE,
    STATE_ROUTES,
    fetch_sources,
    scrape_due_sources,
    scrape_sources,
    scrape_sources_run,
    source_claim,
    source_record_round,
)
from monitoring.selectors import Signal, service_signals
from monitoring.service_signals import decode_buckets
from tests.faultproxy import FaultProxy
from tests.monitoring.exporter import App, Exporter, Trickler

pytestmark = pytest.mark.django_db


@pytest.fixture
def exporter() -> Iterator[Exporter]:
    started = Exporter().start()
    yield started
    started.stop()


@pytest.fixture
def second_exporter() -> Iterator[Exporter]:
    started = Exporter().start()
    yield started
    started.stop()


@pytest.fixture
def base() -> datetime:
    """The start of a minute in the recent past: the rounds happen at base + 0, 15, 30 s..."""
    return timezone.now().replace(second=0, microsecond=0) - timedelta(minutes=30)


def _source(*urls: str, **fields: object) -> MetricSource:
    service = Service.objects.create(name=f"backend-{uuid.uuid4().hex[:8]}")
    fields.setdefault("timeout_seconds", 2.0)
    return MetricSource.objects.create(service=service, urls="\n".join(urls), **fields)


def _round(source: MetricSource, at: datetime) -> MetricSource:
    scrape_sources_run([MetricSource.objects.select_related("service").get(pk=source.pk)], now=at)
    return MetricSource.objects.select_related("service").get(pk=source.pk)


def _minute(source: MetricSource, at: datetime, route: str = "") -> ServiceMinute:
    return ServiceMinute.objects.get(service=source.service, minute=at.replace(second=0), route=route)


def test_the_first_round_is_a_gap_then_increases_are_counted_per_route_and_for_the_service(
    exporter: Exporter, base: datetime
) -> None:
    exporter.app.serve(1000)  # what the process counted before the control plane first looked
    source = _round(_source(exporter.url), base)
    assert source.up is True and source.last_error == "" and source.last_success == base
    first = _minute(source, base)
    assert first.requests is None and first.scrapes == 1 and first.failed == 0  # no pair yet: a gap

    exporter.app.serve(90, seconds=0.3)
    exporter.app.serve(10, status=503, seconds=0.8)
    exporter.app.serve(20, handler="/api/health", seconds=0.01)
    _round(source, base + timedelta(seconds=15))
    whole = _minute(source, base)
    assert (whole.requests, whole.errors, whole.scrapes, whole.failed) == (120, 10, 2, 0)
    assert decode_buckets(whole.buckets) == {0.1: 20, 0.5: 110, 1.0: 120, math.inf: 120}
    match = _minute(source, base, "/api/match")
    assert (match.requests, match.errors) == (100, 10)
    assert _minute(source, base, "/api/health").requests == 20
    hour = ServiceHour.objects.get(service=source.service)
    assert (hour.requests, hour.errors, hour.scrapes, hour.failed) == (120, 10, 2, 0)

    # A round with nothing served adds zeros to the service, and no row for quiet routes.
    _round(source, base + timedelta(seconds=30))
    assert _minute(source, base).requests == 120
    assert ServiceMinute.objects.filter(service=source.service).count() == 3


def test_a_restarted_process_counts_from_zero_rather_than_negative(exporter: Exporter, base: datetime) -> None:
    exporter.app.serve(500)
    source = _round(_source(exporter.url), base)
    exporter.app.restart()
    exporter.app.serve(7, status=500)
    _round(source, base + timedelta(seconds=15))
    whole = _minute(source, base)
    assert (whole.requests, whole.errors) == (7, 7)
    exporter.app.serve(3)
    _round(source, base + timedelta(seconds=30))
    assert _minute(source, base).requests == 10


def test_two_replicas_are_summed_and_one_failing_is_a_partial_gap(
    exporter: Exporter, second_exporter: Exporter, base: datetime
) -> None:
    with FaultProxy("127.0.0.1", second_exporter.port) as proxy:
        second_url = f"http://{proxy.address}/metrics"
        source = _round(_source(exporter.url, second_url), base)
        exporter.app.serve(30)
        second_exporter.app.serve(12, status=500)
        source = _round(source, base + timedelta(seconds=15))
        assert source.up is True
        whole = _minute(source, base)
        assert (whole.requests, whole.errors, whole.scrapes, whole.failed) == (42, 12, 4, 0)

        _refuse(proxy)
        exporter.app.serve(5)
        second_exporter.app.serve(100)
        source = _round(source, base + timedelta(seconds=30))
        assert source.up is False
        assert source.last_error.startswith("1 of 2 replicas failed: ")
        assert f"{second_url} refused the connection" in source.last_error
        whole = _minute(source, base)
        # The answering replica's 5 are counted; the other's are a gap, not zeros.
        assert (whole.requests, whole.scrapes, whole.failed) == (47, 6, 1)

        proxy.heal()
        source = _round(source, base + timedelta(seconds=45))
        assert source.up is True and source.last_error == ""
        assert _minute(source, base).requests == 47  # the healed replica has no pair yet
        second_exporter.app.serve(4)
        _round(source, base + timedelta(seconds=60))
        assert _minute(source, base + timedelta(seconds=60)).requests == 4


def _refuse(proxy: FaultProxy) -> None:
    """Refuse, and let the proxy's accept (0.2 s at most) let go of the listening socket: until then the
    kernel still takes connections on it, which the proxy then drops."""
    proxy.refuse()
    time.sleep(0.3)


def _failed_round(source: MetricSource, at: datetime) -> MetricSource:
    scraped = _round(source, at)
    assert scraped.up is False and scraped.last_success != at
    row = _minute(scraped, at)
    assert (row.requests, row.scrapes, row.failed) == (None, 1, 1)
    return scraped


def test_a_refused_scrape_is_a_failed_scrape_in_words(exporter: Exporter, base: datetime) -> None:
    with FaultProxy("127.0.0.1", exporter.port) as proxy:
        url = f"http://{proxy.address}/metrics"
        _refuse(proxy)
        source = _failed_round(_source(url), base)
        assert source.last_error == f"The scrape of {url} refused the connection."


def test_a_hanging_replica_costs_its_timeout(exporter: Exporter, base: datetime) -> None:
    with FaultProxy("127.0.0.1", exporter.port) as proxy:
        proxy.hang()
        source = _failed_round(_source(f"http://{proxy.address}/metrics", timeout_seconds=0.5), base)
        assert source.last_error.endswith("did not answer within 0.5 s.")


@pytest.mark.parametrize(
    ("mode", "status", "body", "said"),
    [
        ("close", 200, None, "closed the connection before answering"),
        ("truncate", 200, None, "closed the connection in the middle of its answer"),
        ("answer", 500, None, "answered HTTP 500 Internal Server Error"),
        ("answer", 302, None, "answered HTTP 302 Found"),
        ("answer", 200, b"<html><body>Bad gateway</body></html>\n", "is not the Prometheus text format (line 1"),
        ("answer", 200, b"\xff\xfe garbage", "is not UTF-8 text"),
        ("answer", 200, b"# HELP up Up.\n# TYPE up gauge\nup 1\n", "none of the metric families recognised"),
    ],
    ids=["cut", "truncated", "http-500", "redirect", "html", "binary", "unrecognised"],
)
def test_a_failed_scrape_says_why(
    exporter: Exporter, base: datetime, mode: str, status: int, body: bytes | None, said: str
) -> None:
    exporter.app.serve(50)
    exporter.mode, exporter.status, exporter.body = mode, status, body
    source = _failed_round(_source(exporter.url), base)
    assert said in source.last_error


def test_a_failure_between_two_good_rounds_leaves_a_gap_not_a_zero(exporter: Exporter, base: datetime) -> None:
    source = _source(exporter.url)
    _round(source, base)
    exporter.app.serve(60)
    _round(source, base + timedelta(seconds=15))
    exporter.body = b"garbage\n"
    after = base + timedelta(minutes=1)
    _failed_round(source, after)
    exporter.body = None
    exporter.app.serve(60)
    _round(source, after + timedelta(seconds=15))  # pairs with nothing: the failed round kept no counters
    assert _minute(source, after).requests is None
    exporter.app.serve(30)
    _round(source, base + timedelta(minutes=2))
    assert [row.requests for row in ServiceMinute.objects.filter(route="").order_by("minute")] == [60, None, 30]

    signals = service_signals(source.service, timedelta(minutes=3), now=base + timedelta(minutes=3))
    assert signals[Signal.REQUEST_RATE].requests == 90
    assert signals[Signal.UP].value == pytest.approx(4 / 5)


def test_the_bearer_token_is_sent_and_never_shown(
    exporter: Exporter, base: datetime, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    token = f"tok-{uuid.uuid4().hex}"
    monkeypatch.setenv("SCRAPE_TEST_TOKEN", token)
    source = _source(exporter.url, bearer_token_env="SCRAPE_TEST_TOKEN")
    assert _round(source, base).up is True
    assert exporter.headers[-1]["Authorization"] == f"Bearer {token}"

    exporter.status = 401
    exporter.body = f"invalid token {token}\n".encode()
    with caplog.at_level(logging.DEBUG):
        failed = _round(source, base + timedelta(seconds=15))
    assert "answered HTTP 401" in failed.last_error
    exporter.status = 200  # an exporter echoing the token in a line that is not the format
    exporter.body = f'http_requests_total{{handler="{token}"}} not-a-number\n'.encode()
    with caplog.at_level(logging.DEBUG):
        failed = _round(source, base + timedelta(seconds=30))
    # The line is not quoted at all (only its number and the reason), so the token cannot be in it.
    assert failed.last_error.endswith("is not the Prometheus text format (line 1: invalid value).")
    assert token not in failed.last_error and token not in str(failed.state)
    assert token not in caplog.text and "is not the Prometheus text format" in caplog.text

    monkeypatch.delenv("SCRAPE_TEST_TOKEN")
    failed = _round(source, base + timedelta(seconds=45))
    assert failed.last_error == (
        "The environment variable SCRAPE_TEST_TOKEN, named for the bearer token, "
        "is not set in the worker's environment."
    )
    assert len(exporter.headers) == 3  # nothing sent without the token


def test_a_mapped_source_reads_its_own_names(exporter: Exporter, base: datetime) -> None:
    def text(ok: int, failed: int) -> bytes:
        lines = ["# TYPE app_latency histogram"]
        for bound, count in (("0.25", ok), ("1", ok + failed), ("+Inf", ok + failed)):
            lines.append(f'app_latency_bucket{{path="/a",code="200",le="{bound}"}} {count}')
        lines.append(f'app_latency_count{{path="/a",code="200"}} {ok}')
        lines.append(f'app_latency_count{{path="/a",code="429"}} {failed}')
        return ("\n".join(lines) + "\n").encode()

    source = _source(
        exporter.url, histogram_metric="app_latency", route_label="path", status_label="code", error_statuses="429"
    )
    exporter.body = text(10, 1)
    _round(source, base)
    exporter.body = text(30, 6)
    _round(source, base + timedelta(seconds=15))
    row = _minute(source, base, "/a")
    assert (row.requests, row.errors) == (25, 5)


def test_the_signals_read_back_what_was_scraped(exporter: Exporter, base: datetime) -> None:
    source = _source(exporter.url)
    for second in range(0, 60, 15):
        _round(source, base + timedelta(seconds=second))
        exporter.app.serve(95, seconds=0.3)
        exporter.app.serve(5, status=500, seconds=0.05)
    _round(source, base + timedelta(seconds=60))  # 300 requests counted in the first minute, 100 in the next
    exporter.body = b"<html>\n"
    _round(source, base + timedelta(seconds=75))

    signals = service_signals(source.service.name, timedelta(minutes=2), now=base + timedelta(minutes=2))
    # Over the 60 s the four counted rounds span (the first round and the failed one count none).
    assert signals[Signal.REQUEST_RATE].value == pytest.approx(400 / 60)
    assert signals[Signal.REQUEST_RATE].requests == 400
    assert signals[Signal.ERROR_RATIO].value == pytest.approx(0.05)
    # 20 under 0.1 s, 380 between 0.1 and 0.5 s: rank 380 of 400 lies at 360 / 380 of that bucket.
    assert signals[Signal.P95].value == pytest.approx(0.1 + 0.4 * 360 / 380)
    assert signals[Signal.UP].value == pytest.approx(5 / 6)
    assert "not the Prometheus text format" in signals[Signal.UP].error


def test_a_steady_rate_reads_the_same_whatever_the_window_and_the_time_in_the_minute(
    exporter: Exporter, base: datetime
) -> None:
    """10 requests a second for six minutes, asked in the middle of a minute (the current minute half
    filled, the window's first minute cut) and across a gap: 10 req/s every time."""
    source = _source(exporter.url)
    at = base
    for _ in range(6 * 4 + 3):
        if at == base + timedelta(minutes=2):
            exporter.mode = "close"  # a minute of failed scrapes
        if at == base + timedelta(minutes=3):
            exporter.mode = "answer"
        _round(source, at)
        exporter.app.serve(150, seconds=0.2)
        at += timedelta(seconds=15)
    now = at - timedelta(seconds=15) + timedelta(seconds=1)  # just after the last round, 6:31
    for window in (timedelta(minutes=1), timedelta(minutes=5), timedelta(minutes=7)):
        rate = service_signals(source.service, window, now=now, signals=[Signal.REQUEST_RATE])
        assert rate[Signal.REQUEST_RATE].value == pytest.approx(10.0), window


def test_two_workers_never_scrape_the_same_round(exporter: Exporter) -> None:
    source = _source(exporter.url)
    seen_by_one = MetricSource.objects.get(pk=source.pk)
    seen_by_other = MetricSource.objects.get(pk=source.pk)
    now = timezone.now()
    assert source_claim(seen_by_one, now) is True
    assert source_claim(seen_by_other, now) is False
    assert scrape_sources_run([seen_by_other], now=now) == []
    assert exporter.headers == []


def test_beat_scrapes_what_is_due_through_celery(
    exporter: Exporter, eager_tasks: None, django_capture_on_commit_callbacks
) -> None:
    from controlplane.audit import Actor
    from flags.services import flag_create, flag_update
    from monitoring.tasks import scrape_sources

    source = _source(exporter.url)
    disabled = _source(exporter.url, enabled=False)
    scrape_sources.delay()
    assert len(exporter.headers) == 1
    source.refresh_from_db()
    assert source.up is True and source.last_attempt is not None
    disabled.refresh_from_db()
    assert disabled.last_attempt is None

    scrape_sources.delay()  # the interval has not passed
    assert len(exporter.headers) == 1
    assert scrape_due_sources(now=source.last_attempt + timedelta(seconds=15)) != []
    assert len(exporter.headers) == 2

    with django_capture_on_commit_callbacks(execute=True):
        flag = flag_create(
            data={"name": "performance_monitoring", "enabled": False, "rollout_percent": 100}, actor=Actor.system()
        )
    assert scrape_due_sources(now=timezone.now() + timedelta(minutes=5)) == []
    assert len(exporter.headers) == 2
    with django_capture_on_commit_callbacks(execute=True):
        flag_update(name=flag.name, changes={"enabled": True}, actor=Actor.system())
    assert len(scrape_due_sources(now=timezone.now() + timedelta(minutes=5))) == 1


def test_replicas_are_fetched_at_once(base: datetime) -> None:
    """Three replicas whose exporter answers none of them until all three are being asked at once (a
    barrier of three): fetched one after the other, the first would wait its timeout alone and fail."""
    app = App()
    app.serve(10)
    barrier = threading.Barrier(3)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            try:
                barrier.wait(timeout=10)
            except threading.BrokenBarrierError:
                self.send_response(503)
                self.end_headers()
                return
            body = app.text()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        urls = [f"http://127.0.0.1:{server.server_address[1]}/metrics/{replica}" for replica in "abc"]
        source = _round(_source(*urls, timeout_seconds=5.0), base)
    finally:
        barrier.abort()
        server.shutdown()
        server.server_close()
    assert source.last_error == "" and source.up is True
    assert _minute(source, base).scrapes == 3


def test_each_source_is_recorded_as_soon_as_its_own_replicas_answered(exporter: Exporter, base: datetime) -> None:
    """A slow source's exporter answers only once the other source's round is saved: were the rounds
    recorded after the whole batch, it would wait its timeout and fail."""
    fast = _source(exporter.url)
    recorded = threading.Event()

    def saved(sender: type[MetricSource], instance: MetricSource, **kwargs: Any) -> None:
        if instance.pk == fast.pk:
            recorded.set()

    app = App()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            recorded.wait(timeout=10)
            body = app.text()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    post_save.connect(saved, sender=MetricSource)
    try:
        slow = _source(f"http://127.0.0.1:{server.server_address[1]}/metrics", timeout_seconds=5.0)
        results = scrape_sources_run(
            list(MetricSource.objects.select_related("service").filter(pk__in=[fast.pk, slow.pk])), now=base
        )
    finally:
        post_save.disconnect(saved, sender=MetricSource)
        recorded.set()
        server.shutdown()
        server.server_close()
    assert {result.source_id: result.error for result in results} == {fast.pk: "", slow.pk: ""}
    slow.refresh_from_db()
    assert slow.up is True


def test_a_round_whose_source_another_worker_claimed_since_is_dropped(exporter: Exporter, base: datetime) -> None:
    """A worker claims the source and fetches, then stalls; the source comes due again and another worker
    scrapes and records it. The stalled round is then dropped: counted once, the state never goes back."""
    source = _round(_source(exporter.url), base)
    exporter.app.serve(10)
    _round(source, base + timedelta(seconds=15))

    stalled = MetricSource.objects.select_related("service").get(pk=source.pk)
    assert source_claim(stalled, base + timedelta(seconds=30))
    exporter.app.serve(5)
    fetched = fetch_sources([stalled])[stalled.pk]
    exporter.app.serve(7)
    other = _round(source, base + timedelta(seconds=45))  # the other worker, on the next due tick
    assert source_record_round(stalled, fetched, base + timedelta(seconds=30)) is None

    assert _minute(source, base).requests == 10 + 12
    assert ServiceHour.objects.get(service=source.service).requests == 22
    after = MetricSource.objects.get(pk=source.pk)
    assert after.state == other.state and after.state["at"] == (base + timedelta(seconds=45)).isoformat()


def test_the_timeout_bounds_a_trickling_body(base: datetime) -> None:
    """Headers at once, then a byte every 0.1 s for 20 s: the scrape gives up at its 1 s timeout, while
    the exporter is still sending (each read alone is quick, so a per-read timeout never fires)."""
    trickler = Trickler(size=200, pause=0.1).start()
    try:
        source = _round(_source(f"http://127.0.0.1:{trickler.port}/metrics", timeout_seconds=1.0), base)
        assert trickler.started.is_set() and not trickler.sent_all.is_set()
    finally:
        trickler.stop()
    assert source.up is False
    assert source.last_error.endswith("did not finish its answer within 1 s.")


def _steady(sources: list[tuple[MetricSource, Exporter]], base: datetime, per_round: int = 150) -> None:
    """Rounds every 15 s for two minutes; each exporter serves per_round requests between two rounds."""
    for step in range(9):
        for source, exporter in sources:
            _round(source, base + timedelta(seconds=15 * step))
            exporter.app.serve(per_round)


def _rate(service: Service, base: datetime) -> float | None:
    signals = service_signals(service, timedelta(minutes=2), now=base + timedelta(minutes=2))
    return signals[Signal.REQUEST_RATE].value


def test_two_sources_of_one_service_add_their_rates(
    exporter: Exporter, second_exporter: Exporter, base: datetime
) -> None:
    first = _source(exporter.url)
    second = MetricSource.objects.create(service=first.service, urls=second_exporter.url, timeout_seconds=2.0)
    _steady([(first, exporter), (second, second_exporter)], base)  # 10 req/s each
    assert _rate(first.service, base) == pytest.approx(20.0)


def test_one_of_two_replicas_failing_reads_the_rate_of_the_answering_one_for_both(
    exporter: Exporter, second_exporter: Exporter, base: datetime
) -> None:
    """Two replicas sharing 20 req/s evenly; the second refuses from the second round on. Its requests
    are a gap: the first's 10 req/s over half the seconds reads the service's 20 req/s."""
    with FaultProxy("127.0.0.1", second_exporter.port) as proxy:
        source = _round(_source(exporter.url, f"http://{proxy.address}/metrics"), base)
        _refuse(proxy)
        for step in range(1, 9):
            exporter.app.serve(150)
            second_exporter.app.serve(150)
            _round(source, base + timedelta(seconds=15 * step))
    whole = _minute(source, base)
    assert whole.failed == 3 and whole.requests == 450
    assert _rate(source.service, base) == pytest.approx(20.0)


def test_the_state_keeps_a_bounded_number_of_routes(exporter: Exporter, base: datetime) -> None:
    """An exporter labelling 10 more routes than the state keeps: the quietest are summed into one
    "(other)" route, and stay there; a new route then goes there too; every request is counted."""
    routes = STATE_ROUTES + 10
    for index in range(routes):
        exporter.app.serve(index + 1, handler=f"/r/{index}")
    source = _round(_source(exporter.url), base)
    (kept,) = source.state["replicas"].values()
    assert len(kept) == STATE_ROUTES + 1 and OTHER_ROUTE in kept
    assert all(f"/r/{index}" not in kept for index in range(10))  # the quietest ten

    for index in range(routes):
        exporter.app.serve(1, handler=f"/r/{index}")
    exporter.app.serve(1000, handler="/new")
    source = _round(source, base + timedelta(seconds=15))
    (kept_after,) = source.state["replicas"].values()
    assert set(kept_after) == set(kept)
    assert _minute(source, base).requests == routes + 1000
    assert _minute(source, base, OTHER_ROUTE).requests == 10 + 1000
    assert _minute(source, base, f"/r/{routes - 1}").requests == 1


def test_a_state_written_before_the_cap_is_folded_without_counting_twice(exporter: Exporter, base: datetime) -> None:
    """A replica's state holding every one of STATE_ROUTES + 10 routes (as written before the cap): the
    next round folds the quietest ten into "(other)" and counts only what they served since."""
    routes = STATE_ROUTES + 10
    for index in range(routes):
        exporter.app.serve(index + 1, handler=f"/r/{index}")
    source = _round(_source(exporter.url), base)
    state = source.state
    (url,) = state["replicas"]
    kept = state["replicas"][url]
    del kept[OTHER_ROUTE]
    for index in range(10):
        kept[f"/r/{index}"] = [index + 1.0, 0.0, {}]
    MetricSource.objects.filter(pk=source.pk).update(state=state)

    for index in range(routes):
        exporter.app.serve(1, handler=f"/r/{index}")
    source = _round(source, base + timedelta(seconds=15))
    assert len(source.state["replicas"][url]) == STATE_ROUTES + 1
    assert _minute(source, base).requests == routes
    assert _minute(source, base, OTHER_ROUTE).requests == 10


def test_the_due_scan_does_not_load_the_state(exporter: Exporter) -> None:
    _source(exporter.url)
    (source,) = scrape_sources()
    assert "state" in source.get_deferred_fields()


def test_scrape_once_command(exporter: Exporter, capsys: pytest.CaptureFixture[str]) -> None:
    source = _source(exporter.url)
    call_command("scrape_once", source.service.name)
    out = capsys.readouterr().out
    assert f"{source.service.name}: 1 of 1 replica(s) answered" in out
    exporter.status = 500
    call_command("scrape_once")
    assert "answered HTTP 500" in capsys.readouterr().out


def test_beat_looks_for_due_sources_every_five_seconds(settings, exporter: Exporter) -> None:
    entry = settings.CELERY_BEAT_SCHEDULE["scrape-sources"]
    assert entry["task"] == "monitoring.tasks.scrape_sources" and entry["schedule"] == 5.0
    assert entry["options"]["expires"] < 5.0
    source = _source(exporter.url)
    Service.objects.filter(pk=source.service_id).update(enabled=False)
    assert scrape_due_sources() == [] and exporter.headers == []
