"""The ``prometheus`` metric source: PromQL evaluated by a real Prometheus, and the ways a server fails.

The first part starts Debian's ``/usr/bin/prometheus`` once for the module, scraping a test exporter
every second that serves prometheus-fastapi-instrumentator's names with counters growing at known rates;
SLOs of such a source (availability, latency on a bucket bound and between two, the budget chart, the
page rule firing and not resolving when the server goes) are judged from it too. The second needs no
Prometheus: a refused port, a server that never answers, Prometheus' error JSON and bodies that are not
JSON, from local servers.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from django.utils import timezone

from monitoring import promql
from monitoring.models import MetricSource, Service, ServiceLevelObjective, SignalSample, SourceKind
from monitoring.selectors import budget_series, slo_budgets, slo_burn_levels, slo_status, slo_statuses
from monitoring.service_signals import Signal, service_signals
from monitoring.slo import Severity
from tests.faultproxy import FaultProxy
from tests.httpsink import HttpSink
from tests.monitoring.exporter import Trickler

# One real Prometheus for the module: its tests go to one pytest-xdist process (make test's --dist loadgroup).
pytestmark = pytest.mark.xdist_group("prometheus")

PROMETHEUS = "/usr/bin/prometheus"
WINDOW = timedelta(seconds=6)

# What the exporter's backend serves: 21 requests a second on one route, 1 in 21 answered 5xx;
# 70 % within 0.1 s, 90 % within 0.5 s, all within 1 s. The "other" job serves five times as many.
RATE = 21.0
ERROR_SHARE = 1 / 21
SHARES = {"0.1": 0.7, "0.5": 0.9, "1.0": 1.0, "+Inf": 1.0}
# Prometheus' histogram_quantile interpolates linearly within the bucket holding the rank.
P50 = 0.1 * 0.5 / 0.7
P95 = 0.5 + 0.5 * (0.95 - 0.9) / (1.0 - 0.9)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Exporter:
    """A service's /metrics (and /other, a second service) whose counters grow with time at fixed rates."""

    def __init__(self) -> None:
        self.started = time.monotonic() - 30  # counters already well above zero at the first scrape
        self.first_scrape: float | None = None
        exporter = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                factor = {"/metrics": 1, "/other": 5}.get(self.path)
                if factor is None:
                    self.send_error(404)
                    return
                if factor == 1 and exporter.first_scrape is None:
                    exporter.first_scrape = time.monotonic()
                body = exporter.exposition(factor).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.server.server_address[1])
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def exposition(self, factor: int) -> str:
        n = int(RATE * factor * (time.monotonic() - self.started))
        errors = int(n * ERROR_SHARE)
        route = 'handler="/api/matches",method="GET"'
        lines = [
            "# HELP http_requests_total Total number of requests by method, status and handler.",
            "# TYPE http_requests_total counter",
            f'http_requests_total{{{route},status="2xx"}} {n - errors}',
            f'http_requests_total{{{route},status="5xx"}} {errors}',
            "# HELP http_request_duration_seconds Latency with only few buckets by handler.",
            "# TYPE http_request_duration_seconds histogram",
        ]
        lines += [
            f'http_request_duration_seconds_bucket{{{route},le="{bound}"}} {int(n * share)}'
            for bound, share in SHARES.items()
        ]
        lines += [
            f"http_request_duration_seconds_count{{{route}}} {n}",
            f"http_request_duration_seconds_sum{{{route}}} {n * 0.2}",
        ]
        return "\n".join(lines) + "\n"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def prometheus() -> Iterator[str]:
    """The base URL of a real Prometheus scraping the exporter every second, with WINDOW of data."""
    if not os.access(PROMETHEUS, os.X_OK):
        pytest.skip(f"{PROMETHEUS} is missing: apt-get install prometheus")
    exporter = Exporter()
    workdir = Path(tempfile.mkdtemp(prefix="promql-test-"))
    target = f"127.0.0.1:{exporter.port}"
    (workdir / "prometheus.yml").write_text(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n"
        f"  - job_name: backend\n    static_configs:\n      - targets: ['{target}']\n"
        f"  - job_name: other\n    metrics_path: /other\n    static_configs:\n      - targets: ['{target}']\n"
    )
    port = _free_port()
    log = (workdir / "prometheus.log").open("wb")
    process = subprocess.Popen(  # noqa: S603 - a fixed binary and our own arguments
        [
            PROMETHEUS,
            f"--config.file={workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                log.flush()
                tail = (workdir / "prometheus.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"Prometheus did not start (exit {process.returncode}):\n{tail}")
            try:
                with urllib.request.urlopen(f"{base}/-/ready", timeout=1) as response:  # noqa: S310
                    if response.status == 200:
                        break
            except OSError:
                pass
            time.sleep(0.2)
        # Rates over WINDOW are extrapolated from the samples inside it: wait until it is full.
        while exporter.first_scrape is None or time.monotonic() - exporter.first_scrape < WINDOW.total_seconds() + 1.5:
            if time.monotonic() > deadline + 20:
                raise RuntimeError("Prometheus never scraped the exporter")
            time.sleep(0.2)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
        exporter.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def _source(url: str, **fields: Any) -> MetricSource:
    service, _ = Service.objects.get_or_create(name="wingmanmatch-backend")
    fields.setdefault("selector", 'job="backend"')
    return MetricSource.objects.create(service=service, kind=SourceKind.PROMETHEUS, urls=url, **fields)


# --- Against a real Prometheus -----------------------------------------------------------------------


@pytest.mark.django_db
def test_signals_match_what_the_exporter_served(prometheus: str) -> None:
    source = _source(prometheus)

    values = service_signals(source.service, WINDOW)

    assert {signal: value.error for signal, value in values.items()} == dict.fromkeys(Signal, "")
    # rate() extrapolates to the window's edges from samples a second apart: within 15 %.
    assert values[Signal.REQUEST_RATE].value == pytest.approx(RATE, rel=0.15)
    assert values[Signal.REQUEST_RATE].requests == pytest.approx(RATE * WINDOW.total_seconds(), rel=0.15)
    # Ratios of rates over the same samples: only the exporter's rounding to whole requests is left.
    assert values[Signal.ERROR_RATIO].value == pytest.approx(ERROR_SHARE, rel=0.1)
    assert values[Signal.P50].value == pytest.approx(P50, abs=0.01)
    assert values[Signal.P95].value == pytest.approx(P95, abs=0.05)
    assert values[Signal.P99].value == pytest.approx(0.5 + 0.5 * 0.9, abs=0.05)
    assert values[Signal.UP].value == 1.0
    source.refresh_from_db()
    assert (source.up, source.last_error) == (True, "")


@pytest.mark.django_db
def test_the_selector_restricts_the_series(prometheus: str) -> None:
    other = _source(prometheus, selector='job="other"')
    everything = _source(prometheus, selector="")

    assert promql.signal_value(other, Signal.REQUEST_RATE, WINDOW, timezone.now()).value == pytest.approx(
        RATE * 5, rel=0.15
    )
    assert promql.signal_value(everything, Signal.REQUEST_RATE, WINDOW, timezone.now()).value == pytest.approx(
        RATE * 6, rel=0.15
    )


@pytest.mark.django_db
def test_an_override_fills_window_and_selector(prometheus: str) -> None:
    source = _source(
        prometheus,
        queries={
            "request_rate": 'sum(rate(http_requests_total{$selector,status="2xx"}[$window]))',
            "up": "min(min_over_time(up{$selector}[$window]))",
        },
    )
    blank = _source(
        prometheus,
        selector="",
        queries={"request_rate": 'sum(rate(http_requests_total{status="5xx", $selector}[$window]))'},
    )

    values = promql.signal_values(source, (Signal.REQUEST_RATE, Signal.UP), WINDOW, timezone.now())
    assert values[Signal.REQUEST_RATE].value == pytest.approx(RATE * (1 - ERROR_SHARE), rel=0.15)
    assert values[Signal.UP].value == 1.0
    # Both jobs' 5xx: 1 + 5 a second.
    assert promql.signal_value(blank, Signal.REQUEST_RATE, WINDOW, timezone.now()).value == pytest.approx(6, rel=0.2)


@pytest.mark.django_db
def test_a_query_prometheus_refuses_is_an_error_in_its_words_until_fixed(prometheus: str) -> None:
    source = _source(prometheus, queries={"p95": "histogram_quantile(0.95, sum by (le) (rate(x[$window]))"})

    values = promql.signal_values(source, tuple(Signal), WINDOW, timezone.now())

    assert values[Signal.P95].value is None
    assert "HTTP 400: bad_data:" in values[Signal.P95].error
    assert "parse error" in values[Signal.P95].error
    assert values[Signal.P50].value == pytest.approx(P50, abs=0.01)  # the other signals still answer
    source.refresh_from_db()
    assert source.up is False
    assert source.last_error.startswith("p95: ") and "bad_data" in source.last_error

    source.queries = {}
    source.save()
    assert promql.signal_value(source, Signal.P95, WINDOW, timezone.now()).value == pytest.approx(P95, abs=0.05)
    source.refresh_from_db()
    assert (source.up, source.last_error) == (True, "")


@pytest.mark.django_db
def test_many_series_is_an_error_and_no_series_is_no_value(prometheus: str) -> None:
    many = _source(prometheus, selector="", queries={"up": "up{$selector}"})
    nothing = _source(prometheus, selector='job="nothing"')

    up = promql.signal_value(many, Signal.UP, WINDOW, timezone.now())
    assert up.value is None
    assert "2 series" in up.error

    values = promql.signal_values(nothing, tuple(Signal), WINDOW, timezone.now())
    assert {signal: (value.value, value.error) for signal, value in values.items()} == dict.fromkeys(Signal, (None, ""))
    nothing.refresh_from_db()
    assert nothing.up is True


@pytest.mark.django_db
def test_the_worker_stores_each_signal_it_evaluates(prometheus: str) -> None:
    source = _source(prometheus)
    now = timezone.now()

    promql.evaluate_source(source, now)

    stored = {sample.signal: sample.value for sample in SignalSample.objects.filter(service=source.service, at=now)}
    assert set(stored) == {signal.value for signal in Signal}
    assert stored["up"] == 1.0
    assert stored["request_rate"] is not None and stored["request_rate"] > 0
    assert stored["p95"] is not None and 0.5 < stored["p95"] <= 1.0
    source.refresh_from_db()
    assert (source.up, source.last_attempt, source.last_success) == (True, now, now)


@pytest.mark.django_db
def test_beats_pass_evaluates_the_due_sources_once_per_interval(prometheus: str) -> None:
    live = _source(prometheus, interval_seconds=15)
    dead_service = Service.objects.create(name="old-backend")
    dead = MetricSource.objects.create(
        service=dead_service, kind=SourceKind.PROMETHEUS, urls=f"http://127.0.0.1:{_free_port()}", timeout_seconds=0.5
    )
    off_service = Service.objects.create(name="switched-off")
    MetricSource.objects.create(service=off_service, kind=SourceKind.PROMETHEUS, urls=prometheus, enabled=False)
    now = timezone.now()

    samples = promql.evaluate_due_sources(now=now)

    by_service = {(sample.service_id, sample.signal): sample.value for sample in samples}
    assert len(by_service) == 12
    assert by_service[(live.service_id, "up")] == 1.0
    assert by_service[(dead.service_id, "up")] is None
    assert SignalSample.objects.filter(service=off_service).count() == 0
    dead.refresh_from_db()
    assert dead.up is False and "connection refused" in dead.last_error
    # Within the interval nothing is due; after it, both are again.
    assert promql.evaluate_due_sources(now=now + timedelta(seconds=10)) == []
    assert len(promql.evaluate_due_sources(now=now + timedelta(seconds=15))) == 12


@pytest.mark.django_db
def test_the_scrape_workers_beat_pass_evaluates_prometheus_sources(prometheus: str) -> None:
    from monitoring.scrape import scrape_due_sources

    source = _source(prometheus)
    now = timezone.now()

    scrape_due_sources(now=now)

    assert SignalSample.objects.get(service=source.service, signal="up", at=now).value == 1.0


# --- SLOs against a real Prometheus ------------------------------------------------------------------


def _served(source: MetricSource, matchers: str, now) -> float:
    """What the exporter counted between the first and the last sample Prometheus holds (no extrapolation)."""
    series = f"http_requests_total{{{matchers}}}"
    found = promql.query(source, f"sum(max_over_time({series}[1h])) - sum(min_over_time({series}[1h]))", now)
    assert found is not None
    return found


def _slo(source: MetricSource, name: str = "availability", **fields: Any) -> ServiceLevelObjective:
    values: dict[str, Any] = {"kind": "availability", "target_percent": 99, "window_days": 28, **fields}
    return ServiceLevelObjective.objects.create(service=source.service, name=name, **values)


@pytest.mark.django_db
def test_window_counts_match_what_the_exporter_served(prometheus: str) -> None:
    source = _source(prometheus)
    now = timezone.now()
    evaluation = promql.Evaluation(source)

    counted = promql.window_counters(evaluation, WINDOW, now, buckets=False)
    latency = promql.window_counters(evaluation, WINDOW, now, buckets=True)

    assert counted is not None and latency is not None and evaluation.errors == []
    assert counted.requests == pytest.approx(RATE * WINDOW.total_seconds(), rel=0.15)
    assert counted.errors / counted.requests == pytest.approx(ERROR_SHARE, rel=0.1)
    # The bounds as the server has them, +Inf as the requests; the same observations as the counter's.
    assert sorted(latency.buckets) == [0.1, 0.5, 1.0, math.inf]
    assert latency.requests == pytest.approx(counted.requests, rel=0.02)
    assert latency.buckets[0.5] / latency.requests == pytest.approx(0.9, abs=0.01)


@pytest.mark.django_db
def test_an_availability_slo_counts_the_requests_and_errors_prometheus_holds(prometheus: str) -> None:
    source = _source(prometheus)
    _slo(source)
    now = timezone.now()

    status = slo_status(source.service.name, "availability", now)

    assert status is not None and status.error == ""
    assert status.counts is not None
    # Every window holds all the samples: increase() adds at most a scrape interval and a half (1.5 s).
    assert status.counts.total == pytest.approx(_served(source, 'job="backend"', now), abs=RATE * 1.5 + 1)
    assert status.counts.bad == pytest.approx(_served(source, 'job="backend",status="5xx"', now), abs=2)
    burn = ERROR_SHARE / 0.01  # 1 in 21 fails against a 1 % budget: 4.76x
    assert status.budget_left == pytest.approx(1 - burn, rel=0.1)
    assert status.burn_rates == pytest.approx(dict.fromkeys(status.burn_rates, burn), rel=0.1)
    assert status.level(Severity.PAGE) == pytest.approx(burn / 6, rel=0.1)  # 6x over 6 h and 30 min, the closest
    assert status.ticket_firing and not status.page_firing  # over 1x for 3 d and 6 h, under 6x


@pytest.mark.django_db
def test_a_latency_slo_reads_a_bound_exactly_and_interpolates_between_bounds(prometheus: str) -> None:
    source = _source(prometheus)
    _slo(source, "bound", kind="latency", threshold_ms=500, target_percent=95)
    _slo(source, "between", kind="latency", threshold_ms=300, target_percent=95)
    _slo(source, "availability")
    now = timezone.now()

    statuses = {status.name: status for status in slo_statuses(now)}

    assert {name: status.error for name, status in statuses.items()} == dict.fromkeys(statuses, "")
    bound, between = statuses["bound"].counts, statuses["between"].counts
    assert bound is not None and between is not None
    assert bound.total == pytest.approx(statuses["availability"].counts.total, rel=0.02)
    assert bound.good / bound.total == pytest.approx(0.9, abs=0.01)  # le="0.5"
    # 300 ms lies between the 0.1 (70 %) and 0.5 (90 %) bounds: halfway, 80 %.
    assert between.good / between.total == pytest.approx(0.8, abs=0.01)
    assert statuses["bound"].burn_rates[timedelta(minutes=5)] == pytest.approx(0.1 / 0.05, rel=0.1)
    assert statuses["between"].burn_rates[timedelta(minutes=5)] == pytest.approx(0.2 / 0.05, rel=0.1)


@pytest.mark.django_db
def test_the_budget_chart_comes_from_range_queries(prometheus: str) -> None:
    source = _source(prometheus)
    _slo(source, window_days=1)
    now = timezone.now()
    status = slo_status(source.service.name, "availability", now)
    assert status is not None

    points = budget_series(status, now)

    assert len(points) == 24 and points[-1].at == now and points[1].at - points[0].at == timedelta(hours=1)
    # Prometheus has held samples for seconds: only the last point's day holds any.
    assert [point.budget_left for point in points[:-1]] == [None] * 23
    assert points[-1].budget_left == pytest.approx(status.budget_left, rel=0.05)
    assert points[-1].total == pytest.approx(status.counts.total, rel=0.05)


@pytest.mark.django_db
def test_the_page_rule_fires_on_a_prometheus_slo_and_a_refusing_server_does_not_resolve_it(
    prometheus: str, alerts_on: None, django_capture_on_commit_callbacks
) -> None:
    from alerting.models import Alert, AlertState
    from alerting.services import alert_rules_evaluate

    source = _source(prometheus)
    _slo(source, target_percent=99.9)  # 1 in 21 fails: 47.6x a 0.1 % budget
    now = timezone.now()

    with django_capture_on_commit_callbacks(execute=True):
        alert_rules_evaluate(now)
    alert = Alert.objects.get(rule__name="SLO burn rate: page")
    assert (alert.state, alert.component, alert.measurement) == (AlertState.FIRING, source.service.name, "availability")
    assert alert.last_value == pytest.approx(ERROR_SHARE / 0.001 / 6, rel=0.1)

    source.urls = f"http://127.0.0.1:{_free_port()}"
    source.save()
    with django_capture_on_commit_callbacks(execute=True):
        alert_rules_evaluate(now + timedelta(minutes=1))
    alert.refresh_from_db()
    assert alert.state == AlertState.FIRING  # no data: nothing resolves
    assert "connection refused" in slo_status(source.service.name, "availability").error


@pytest.mark.django_db
def test_a_query_prometheus_refuses_makes_the_slo_no_data_in_its_words(prometheus: str) -> None:
    source = _source(prometheus, queries={"errors": "sum(increase(x{$selector}[$window])"})
    _slo(source)
    _slo(source, "fast", kind="latency", threshold_ms=500)

    statuses = {status.name: status for status in slo_statuses(timezone.now())}

    broken = statuses["availability"]
    assert broken.budget_left is None and set(broken.burn_rates.values()) == {None}
    assert "HTTP 400: bad_data:" in broken.error and "parse error" in broken.error
    assert statuses["fast"].error == "" and statuses["fast"].budget_left is not None  # its queries answer
    assert slo_burn_levels("page")[(source.service.name, "availability")] is None


@pytest.mark.django_db
def test_the_dashboard_reads_the_budgets_beat_evaluated(prometheus: str, operator_client) -> None:
    from monitoring.dashboard import charts_refresh

    source = _source(prometheus)
    _slo(source)

    # A page with nothing cached computes the charts itself, but asks no Prometheus server.
    assert slo_budgets() == {source.service.name: None}
    assert operator_client.get("/").status_code == 200
    assert charts_refresh(evaluate_prometheus=False)["slo_budgets"] == {source.service.name: None}

    budgets = charts_refresh()["slo_budgets"]  # beat's refresh asks
    assert budgets[source.service.name] == pytest.approx(1 - ERROR_SHARE / 0.01, rel=0.1)
    assert slo_budgets() == budgets
    html = operator_client.get("/").content.decode()
    assert re.search(r'<tr id="service-wingmanmatch-backend".*?exhausted.*?</tr>', html, re.S)


# --- Failures, without Prometheus --------------------------------------------------------------------


def _all_failed_with(values: dict[Signal, Any], words: str) -> bool:
    return all(value.value is None and words in value.error for value in values.values())


@pytest.fixture(scope="module")
def _module_sink() -> Iterator[HttpSink]:
    sink = HttpSink().start()
    yield sink
    sink.stop()


@pytest.fixture
def sink(_module_sink: HttpSink) -> HttpSink:
    """A local server answering every GET with ``sink.status`` and ``sink.body`` (set by the test)."""
    _module_sink.requests.clear()
    _module_sink.status, _module_sink.body = 200, b""
    return _module_sink


def _answer(kind: str, result: Any) -> bytes:
    return json.dumps({"status": "success", "data": {"resultType": kind, "result": result}}).encode()


@pytest.mark.django_db
def test_a_refused_port_is_an_error_and_a_later_success_clears_it(sink: HttpSink) -> None:
    source = _source(f"http://127.0.0.1:{_free_port()}")

    promql.evaluate_source(source)

    source.refresh_from_db()
    assert source.up is False
    assert "connection refused" in source.last_error
    assert list(SignalSample.objects.filter(service=source.service).values_list("value", flat=True)) == [None] * 6

    sink.body = _answer("vector", [{"metric": {}, "value": [1, "2.5"]}])
    source.urls = f"http://127.0.0.1:{sink.port}"
    source.save()
    assert promql.signal_value(source, Signal.REQUEST_RATE, WINDOW, timezone.now()).value == 2.5
    source.refresh_from_db()
    assert (source.up, source.last_error) == (True, "")


@pytest.mark.django_db
def test_a_server_that_never_answers_costs_one_timeout_for_every_signal() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    held: list[socket.socket] = []
    done = threading.Event()

    def accept_and_say_nothing() -> None:
        while not done.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept_and_say_nothing, daemon=True)
    thread.start()
    try:
        source = _source(f"http://127.0.0.1:{listener.getsockname()[1]}", timeout_seconds=0.3)
        values = promql.signal_values(source, tuple(Signal), WINDOW, timezone.now())
    finally:
        done.set()
        thread.join(5)
        for conn in held:
            conn.close()
        listener.close()

    assert _all_failed_with(values, "no answer within 0.3 s")
    assert len(held) == 1  # the first query timed out; the other six were not tried
    source.refresh_from_db()
    assert source.up is False and "no answer within 0.3 s" in source.last_error


@pytest.mark.django_db
def test_a_server_that_never_answers_costs_one_timeout_for_all_the_slos_of_its_source() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    held: list[socket.socket] = []
    done = threading.Event()

    def accept_and_say_nothing() -> None:
        while not done.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept_and_say_nothing, daemon=True)
    thread.start()
    try:
        source = _source(f"http://127.0.0.1:{listener.getsockname()[1]}", timeout_seconds=0.3)
        _slo(source)
        _slo(source, "fast", kind="latency", threshold_ms=500)
        statuses = slo_statuses(timezone.now())
        levels = slo_burn_levels("page")
    finally:
        done.set()
        thread.join(5)
        for conn in held:
            conn.close()
        listener.close()

    words = f"{source.url_list()[0]}: no answer within 0.3 s"
    assert {status.name: status.error for status in statuses} == {"availability": words, "fast": words}
    assert all(status.budget_left is None for status in statuses)
    assert levels == {(source.service.name, "availability"): None, (source.service.name, "fast"): None}
    assert len(held) == 2  # one query each time the SLOs were asked; the second SLO's were not tried


@pytest.mark.django_db
def test_the_dashboards_budgets_ask_no_server(sink: HttpSink) -> None:
    sink.body = _answer("vector", [{"metric": {}, "value": [1, "5"]}])  # every query: 5 requests, 5 failed
    source = _source(f"http://127.0.0.1:{sink.port}")
    _slo(source)

    assert slo_budgets() == {source.service.name: None}
    assert sink.requests == []

    budgets = slo_budgets(evaluate_prometheus=True)
    assert budgets == {source.service.name: pytest.approx(-99)}  # all failed: 100 times the 1 % budget
    assert [urlsplit(r.path).path for r in sink.requests] == ["/api/v1/query", "/api/v1/query"]
    sink.requests.clear()
    assert slo_budgets() == budgets
    assert sink.requests == []


@pytest.mark.django_db
def test_the_timeout_bounds_all_the_queries_of_a_slow_server_together() -> None:
    asked: list[str] = []

    class Slow(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            asked.append(self.path)
            time.sleep(0.15)
            body = _answer("scalar", [1, "1"])
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        source = _source(f"http://127.0.0.1:{server.server_address[1]}", timeout_seconds=0.4)
        values = promql.signal_values(source, tuple(Signal), WINDOW, timezone.now())
    finally:
        server.shutdown()
        server.server_close()

    # Each answer takes 0.15 s: the fourth query would start after the 0.4 s were spent.
    assert len(asked) <= 3
    assert values[Signal.UP].error == f"http://127.0.0.1:{server.server_address[1]}: no answer within 0.4 s"


@pytest.mark.django_db
def test_a_hung_proxy_in_front_of_prometheus_is_a_timeout(sink: HttpSink) -> None:
    sink.body = _answer("scalar", [1, "1"])
    with FaultProxy("127.0.0.1", sink.port) as proxy:
        source = _source(f"http://{proxy.address}", timeout_seconds=0.3)
        assert promql.signal_value(source, Signal.UP, WINDOW, timezone.now()).value == 1.0
        proxy.hang()
        value = promql.signal_value(source, Signal.UP, WINDOW, timezone.now())

    assert value.value is None and value.error == f"http://{proxy.address}: no answer within 0.3 s"


@pytest.mark.django_db
def test_prometheus_error_json_is_given_in_words_and_the_token_is_sent_not_shown(sink: HttpSink, monkeypatch) -> None:
    sink.status = 400
    sink.body = json.dumps(
        {"status": "error", "errorType": "bad_data", "error": 'invalid parameter "query": 1:5: parse error'}
    ).encode()
    monkeypatch.setenv("PROM_TOKEN_TEST", "s3cret-token-value")
    source = _source(f"http://127.0.0.1:{sink.port}/prefix/", bearer_token_env="PROM_TOKEN_TEST")
    now = timezone.now()

    value = promql.signal_value(source, Signal.P95, WINDOW, now)

    assert value.value is None
    assert value.error == (
        f'http://127.0.0.1:{sink.port}/prefix/ answered HTTP 400: bad_data: invalid parameter "query": 1:5: parse error'
    )
    request = sink.requests[-1]
    path = urlsplit(request.path)
    assert path.path == "/prefix/api/v1/query"
    params = parse_qs(path.query)
    assert params["query"] == [
        'histogram_quantile(0.95, sum by (le) (rate(http_request_duration_seconds_bucket{job="backend"}[6s])))'
    ]
    assert float(params["time"][0]) == pytest.approx(now.timestamp(), abs=0.001)
    assert request.headers["Authorization"] == "Bearer s3cret-token-value"
    source.refresh_from_db()
    assert source.up is False
    assert "s3cret" not in source.last_error and "bad_data" in source.last_error


@pytest.mark.django_db
def test_a_token_variable_that_is_not_set_is_named(sink: HttpSink) -> None:
    source = _source(f"http://127.0.0.1:{sink.port}", bearer_token_env="PROM_TOKEN_NOT_SET_ANYWHERE")

    value = promql.signal_value(source, Signal.UP, WINDOW, timezone.now())

    assert value.value is None
    assert "PROM_TOKEN_NOT_SET_ANYWHERE" in value.error
    assert sink.requests == []  # nothing is sent without the token


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("status", "body", "words"),
    [
        (200, b"<html>Grafana login</html>", "answered HTTP 200 with a body that is not JSON"),
        (502, b"<html>Bad gateway</html>", "answered HTTP 502: Bad Gateway"),
        (200, b'{"hello": "world"}', "not a Prometheus API answer"),
        (200, _answer("matrix", []), "a matrix result"),
        (200, _answer("vector", [{"value": "x"}]), "could not be read"),
    ],
    ids=["html", "bad-gateway", "other-json", "matrix", "broken-vector"],
)
def test_garbage_answers_are_errors_in_words(sink: HttpSink, status: int, body: bytes, words: str) -> None:
    sink.status, sink.body = status, body
    source = _source(f"http://127.0.0.1:{sink.port}")

    value = promql.signal_value(source, Signal.ERROR_RATIO, WINDOW, timezone.now())

    assert value.value is None
    assert words in value.error
    source.refresh_from_db()
    assert source.up is False and words in source.last_error


@pytest.mark.django_db
def test_a_server_speaking_something_else_than_http_is_an_error() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)

    def answer_garbage() -> None:
        for _ in range(2):  # the requests counted, then the signal
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            conn.recv(65536)
            conn.sendall(b"\x00\x01garbage that is no status line\r\n\r\n")
            conn.close()

    thread = threading.Thread(target=answer_garbage, daemon=True)
    thread.start()
    try:
        source = _source(f"http://127.0.0.1:{listener.getsockname()[1]}")
        value = promql.signal_value(source, Signal.UP, WINDOW, timezone.now())
    finally:
        thread.join(5)
        listener.close()

    assert value.value is None
    assert "not HTTP" in value.error


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("text", "value"), [("NaN", None), ("+Inf", None), ("0.25", 0.25)], ids=["nan", "inf", "number"]
)
def test_nan_and_infinities_are_no_value(sink: HttpSink, text: str, value: float | None) -> None:
    sink.body = _answer("scalar", [1, text])
    source = _source(f"http://127.0.0.1:{sink.port}")

    got = promql.signal_value(source, Signal.P99, WINDOW, timezone.now())

    assert (got.value, got.error) == (value, "")


# --- PromQL text ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("window", "text"),
    [
        (timedelta(seconds=300), "5m"),
        (timedelta(hours=1), "1h"),
        (timedelta(seconds=90), "90s"),
        (timedelta(days=28), "28d"),
        (timedelta(milliseconds=1500), "1500ms"),
    ],
    ids=["5m", "1h", "90s", "28d", "1500ms"],
)
def test_windows_are_written_as_promql_durations(window: timedelta, text: str) -> None:
    assert promql.promql_duration(window) == text


def test_a_blank_selector_leaves_valid_promql() -> None:
    assert promql.render('sum(rate(x{$selector,status=~"5.."}[$window]))', "", timedelta(minutes=5)) == (
        'sum(rate(x{status=~"5.."}[5m]))'
    )
    assert promql.render("avg(up{$selector})", "  ", timedelta(hours=1)) == "avg(up)"
    assert promql.render("avg(up{$selector})", '{job="a", env="prod"}', timedelta(hours=1)) == (
        'avg(up{job="a", env="prod"})'
    )


def test_opentelemetry_names_and_mapped_error_statuses() -> None:
    source = MetricSource(histogram_metric="http_server_request_duration_seconds", error_statuses="5xx, 429")
    queries = promql.default_queries(source)
    assert queries["error_ratio"] == (
        "(sum(rate(http_server_request_duration_seconds_count{$selector,"
        'http_response_status_code=~"5..|429"}[$window])) or vector(0))'
        " / sum(rate(http_server_request_duration_seconds_count{$selector}[$window]))"
    )
    assert queries["p99"] == (
        "histogram_quantile(0.99, sum by (le) (rate(http_server_request_duration_seconds_bucket{$selector}[$window])))"
    )


@pytest.mark.django_db
def test_the_timeout_bounds_a_trickling_answer() -> None:
    """Headers at once, then a byte every 0.1 s for 20 s: the query gives up at the 1 s timeout while the
    server is still sending (each read alone is quick, so a per-read timeout never fires)."""
    trickler = Trickler(size=200, pause=0.1).start()
    try:
        source = _source(f"http://127.0.0.1:{trickler.port}", timeout_seconds=1.0)
        value = promql.signal_value(source, Signal.UP, WINDOW, timezone.now())
        assert trickler.started.is_set() and not trickler.sent_all.is_set()
    finally:
        trickler.stop()
    assert value.value is None and value.error == f"http://127.0.0.1:{trickler.port}: no answer within 1 s"
