"""Reading a scrape: monitoring.exposition against prometheus-client's full parse, in the same run.

The exposition is what prometheus-client itself writes for a FastAPI backend instrumented under
prometheus-fastapi-instrumentator's names, at 10,000 series: 50 routes x 4 methods x 5 statuses, each
with an `http_requests_total` counter and an `http_request_duration_seconds` histogram (the default
buckets: 14 and +Inf), plus the process and platform families a real one carries. About 20,000 lines.

Timed: prometheus_client.parser.text_string_to_metric_families over the whole text (consumed into a
list, as a caller needs it) and monitoring.exposition.read_families for the two families a signal needs.
Also timed, for information: monitoring.rollup.read_scrape, the same reading followed by the sums per
route a rollup starts from. Median of --repetitions runs each, taking turns. Goal: ours (the reading)
/ full parse <= 0.5.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402
from prometheus_client.platform_collector import PlatformCollector  # noqa: E402
from prometheus_client.process_collector import ProcessCollector  # noqa: E402

from monitoring.exposition import read_families  # noqa: E402
from monitoring.rollup import INSTRUMENTATOR, read_scrape  # noqa: E402

ROUTES = 50
METHODS = ("GET", "POST", "PUT", "DELETE")
STATUSES = ("2xx", "3xx", "4xx", "5xx", "1xx")
FAMILIES = {"http_requests_total", "http_request_duration_seconds"}
GOAL = 0.5


def exposition() -> str:
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    labels = ("handler", "method", "status")
    requests = Counter("http_requests_total", "Total number of requests.", labels, registry=registry)
    durations = Histogram("http_request_duration_seconds", "Latency of requests.", labels, registry=registry)
    for route in range(ROUTES):
        handler = f"/api/r{route}"
        for method in METHODS:
            for index, status in enumerate(STATUSES):
                requests.labels(handler, method, status).inc(1000 + route * 7 + index)
                histogram = durations.labels(handler, method, status)
                for observation in range(1 + index):
                    histogram.observe(0.003 * (route + 1) * (observation + 1))
    return generate_latest(registry).decode()


def timed(work: Callable[[], object], runs: list[float]) -> None:
    started = time.perf_counter()
    work()
    runs.append(time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repetitions", type=int, default=7)
    options = parser.parse_args()

    text = exposition()
    lines = text.count("\n")
    full = list(text_string_to_metric_families(text))
    series = sum(len(family.samples) for family in full)
    ours = read_families(text, FAMILIES)
    read = sum(len(samples) for samples in ours.samples.values())
    print(f"exposition: {lines} lines, {len(text) / 1e6:.2f} MB, {series} samples in all")
    print(f"families read: {sorted(FAMILIES)}: {read} samples")

    full_runs: list[float] = []
    our_runs: list[float] = []
    scrape_runs: list[float] = []
    for _ in range(options.repetitions):
        timed(lambda: list(text_string_to_metric_families(text)), full_runs)
        timed(lambda: read_families(text, FAMILIES), our_runs)
        timed(lambda: read_scrape(text, INSTRUMENTATOR), scrape_runs)
    full_time = statistics.median(full_runs)
    our_time = statistics.median(our_runs)
    ratio = our_time / full_time
    print(f"prometheus-client full parse: {full_time * 1000:.1f} ms (median of {len(full_runs)})")
    print(f"monitoring.exposition.read_families: {our_time * 1000:.1f} ms (median of {len(our_runs)})")
    scrape_time = statistics.median(scrape_runs)
    print(
        f"monitoring.rollup.read_scrape (reading and sums per route): {scrape_time * 1000:.1f} ms, "
        f"{scrape_time / full_time:.2f} of the full parse"
    )
    verdict = "ok" if ratio <= GOAL else "over the goal"
    print(f"ratio ours / full parse: {ratio:.2f} (goal <= {GOAL}): {verdict}")


if __name__ == "__main__":
    main()
