"""The scrape source's worker: its reading against a full parse, and its CPU at 20 services, in one run.

(a) Scrape and roll up an exposition of 10,000 series (bench/exposition.py's: prometheus-client's own
    text for 50 routes x 4 methods x 5 statuses under prometheus-fastapi-instrumentator's names, the
    histogram with prometheus-client's default buckets, plus the process and platform families; about
    20,000 lines, 1.9 MB): monitoring.rollup.read_scrape and monitoring.rollup.rollup against the
    previous round, against prometheus_client.parser.text_string_to_metric_families over the same text.
    Median of --repetitions runs each, taking turns. Goal: ratio <= 0.5. For information, the same with
    the HTTP fetch from a local exporter.

(b) 20 services of 1,000 series each (a tenth of (a): 5 routes x 4 methods x 5 statuses), scraped
    every 15 s from a local exporter in a process of its own (its counters grow at every scrape, so
    every round writes rollups): --rounds rounds of monitoring.scrape.scrape_sources_run over the 20
    sources run back to back with the simulated clock moving 15 s a round, on a migrated database
    (SQLite in a temporary directory, or --database-url). The figure is this process's CPU time (the
    fetch threads included, the exporter's not) per round, as a share of one core over the 15 s a round
    stands for. Goal: < 0.10.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

RATIO_GOAL = 0.5
CPU_GOAL = 0.10
SERVICES = 20
INTERVAL = 15.0
METHODS = ("GET", "POST", "PUT", "DELETE")
STATUSES = ("200", "201", "404", "429", "500")
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)  # prometheus-client's


# --- The exporter of (b), in a process of its own -------------------------------------------------


class Counts:
    """One service's cumulative counters, grown a little at every scrape."""

    def __init__(self, routes: int, seed: int) -> None:
        self.random = random.Random(seed)
        self.series = [
            (f"/api/r{route}", method, f"{status[0]}xx")
            for route in range(routes)
            for method in METHODS
            for status in STATUSES
        ]
        self.requests = [0] * len(self.series)
        self.buckets = [[0] * (len(BUCKETS) + 1) for _ in self.series]
        self.sums = [0.0] * len(self.series)

    def grow(self) -> None:
        for index in range(len(self.series)):
            served = self.random.randint(0, 20)
            self.requests[index] += served
            latency = self.random.expovariate(8.0)
            for position, bound in enumerate((*BUCKETS, float("inf"))):
                if latency <= bound:
                    self.buckets[index][position] += served
            self.sums[index] += latency * served

    def text(self) -> bytes:
        lines = [
            "# HELP http_requests_total Total number of requests by method, status and handler.",
            "# TYPE http_requests_total counter",
        ]
        for (handler, method, status), count in zip(self.series, self.requests, strict=True):
            lines.append(f'http_requests_total{{handler="{handler}",method="{method}",status="{status}"}} {count}.0')
        lines += [
            "# HELP http_request_duration_seconds Latency of requests.",
            "# TYPE http_request_duration_seconds histogram",
        ]
        for (handler, method, status), counts, total in zip(self.series, self.buckets, self.sums, strict=True):
            labels = f'handler="{handler}",method="{method}",status="{status}"'
            for bound, count in zip((*BUCKETS, "+Inf"), counts, strict=True):
                lines.append(f'http_request_duration_seconds_bucket{{{labels},le="{bound}"}} {count}.0')
            lines.append(f"http_request_duration_seconds_count{{{labels}}} {counts[-1]}.0")
            lines.append(f"http_request_duration_seconds_sum{{{labels}}} {total}")
        lines += ["# TYPE process_cpu_seconds_total counter", "process_cpu_seconds_total 1.5"]
        return ("\n".join(lines) + "\n").encode()


def serve_exporter(services: int, routes: int) -> None:
    """Serve /s<n>/metrics for each service on a free port; print the port, then serve until killed."""
    counts = [Counts(routes, seed) for seed in range(services)]
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            index = int(self.path.split("/")[1][1:])
            with lock:
                counts[index].grow()
                body = counts[index].text()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()


# --- (a) -------------------------------------------------------------------------------------------


def timed(work: Callable[[], object], runs: list[float]) -> None:
    started = time.perf_counter()
    work()
    runs.append(time.perf_counter() - started)


def bench_reading(text: str, repetitions: int) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    from monitoring.rollup import INSTRUMENTATOR, ReplicaScrape, read_scrape, rollup
    from monitoring.scrape import fetch_replica

    samples = sum(len(family.samples) for family in text_string_to_metric_families(text))
    print(f"(a) exposition: {text.count(chr(10))} lines, {len(text) / 1e6:.2f} MB, {samples} samples")
    body = text.encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/metrics"

    from datetime import UTC, datetime, timedelta

    start = datetime(2026, 1, 1, tzinfo=UTC)
    previous = [ReplicaScrape("replica", start, read_scrape(text, INSTRUMENTATOR))]

    def scrape_and_roll_up() -> object:
        current = [ReplicaScrape("replica", start + timedelta(seconds=15), read_scrape(text, INSTRUMENTATOR))]
        return rollup(previous, current, start, start + timedelta(seconds=15))

    def fetch_and_roll_up() -> object:
        fetched = fetch_replica(url, 10.0, "", INSTRUMENTATOR)
        assert fetched.routes is not None, fetched.error
        current = [ReplicaScrape("replica", start + timedelta(seconds=15), fetched.routes)]
        return rollup(previous, current, start, start + timedelta(seconds=15))

    full_runs: list[float] = []
    ours: list[float] = []
    fetched_runs: list[float] = []
    for _ in range(repetitions):
        timed(lambda: list(text_string_to_metric_families(text)), full_runs)
        timed(scrape_and_roll_up, ours)
        timed(fetch_and_roll_up, fetched_runs)
    server.shutdown()
    full, our, with_fetch = (statistics.median(runs) for runs in (full_runs, ours, fetched_runs))
    ratio = our / full
    print(f"    prometheus-client full parse: {full * 1000:.1f} ms (median of {repetitions})")
    print(f"    read_scrape + rollup: {our * 1000:.1f} ms")
    print(f"    with the HTTP fetch from a local exporter: {with_fetch * 1000:.1f} ms, {with_fetch / full:.2f} of it")
    print(f"    ratio scrape+rollup / full parse: {ratio:.2f} (goal <= {RATIO_GOAL}): {verdict(ratio <= RATIO_GOAL)}")
    return ratio


# --- (b) -------------------------------------------------------------------------------------------


def setup_django(database_url: str | None) -> None:
    var_dir = Path(tempfile.mkdtemp(prefix="bench-scrape-"))
    os.environ["CONTROLPLANE_VAR_DIR"] = str(var_dir)
    os.environ["DATABASE_URL"] = database_url or f"sqlite:///{var_dir / 'bench.sqlite3'}"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings")
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)


def bench_cpu(rounds: int, routes: int) -> float:
    exporter = subprocess.Popen(
        [sys.executable, __file__, "--exporter", str(SERVICES), str(routes)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert exporter.stdout is not None
        port = int(exporter.stdout.readline())
        from datetime import timedelta

        from django.db import connection
        from django.utils import timezone

        from monitoring.models import MetricSource, Service, ServiceMinute
        from monitoring.scrape import scrape_sources_run

        Service.objects.filter(name__startswith="bench-scrape-").delete()  # a database given again
        sources = []
        for index in range(SERVICES):
            service = Service.objects.create(name=f"bench-scrape-{index:02d}")
            sources.append(
                MetricSource.objects.create(service=service, urls=f"http://127.0.0.1:{port}/s{index}/metrics")
            )
        size = len(Counts(routes, 0).text())
        lines = Counts(routes, 0).text().count(b"\n")
        print(
            f"(b) {SERVICES} services x {routes * len(METHODS) * len(STATUSES)} label sets "
            f"({lines} lines, {size / 1e3:.0f} kB each), on {connection.vendor}"
        )
        now = timezone.now() - timedelta(seconds=INTERVAL * (rounds + 2))

        def one_round() -> None:
            nonlocal now
            now += timedelta(seconds=INTERVAL)
            fresh = list(MetricSource.objects.filter(pk__in=[s.pk for s in sources]).select_related("service"))
            results = scrape_sources_run(fresh, now=now)
            assert len(results) == SERVICES and all(r.up for r in results), [r.error for r in results if r.error]

        one_round()  # the first round only keeps counters: warm-up
        one_round()
        cpu_started, wall_started = time.process_time(), time.perf_counter()
        for _ in range(rounds):
            one_round()
        cpu = (time.process_time() - cpu_started) / rounds
        wall = (time.perf_counter() - wall_started) / rounds
        rows = ServiceMinute.objects.count()
    finally:
        exporter.terminate()
        exporter.wait()
    share = cpu / INTERVAL
    print(f"    {rounds} rounds: {cpu * 1000:.0f} ms CPU and {wall * 1000:.0f} ms wall per round; {rows} minute rows")
    print(f"    worker CPU as a share of one core at one round per {INTERVAL:g} s: {share:.3f}")
    print(f"    ratio share / limit {CPU_GOAL}: {share / CPU_GOAL:.2f} (goal < 1): {verdict(share < CPU_GOAL)}")
    return share


def verdict(ok: bool) -> str:
    return "ok" if ok else "over the goal"


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--exporter":
        serve_exporter(int(sys.argv[2]), int(sys.argv[3]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repetitions", type=int, default=7)
    parser.add_argument("--rounds", type=int, default=20, help="scrape rounds of (b) (15 s of simulated time each)")
    parser.add_argument("--routes", type=int, default=5, help="routes per service in (b)")
    parser.add_argument("--database-url", help="(b)'s database (default: SQLite in a temporary directory)")
    options = parser.parse_args()
    # prometheus-client writes (a)'s text before the settings turn on its multiprocess mode.
    from bench.exposition import exposition

    text = exposition()
    setup_django(options.database_url)
    bench_reading(text, options.repetitions)
    bench_cpu(options.rounds, options.routes)


if __name__ == "__main__":
    main()
