"""The demo product's simulated requests and the metrics they leave, as prometheus-fastapi-instrumentator names them.

Pure and seeded: ``generate`` draws requests from a ``random.Random`` and a flag lookup, ``Metrics`` counts
them, so a test drives thousands of requests without a server or a clock.

The names and labels are instrumentator's defaults (``http_requests_total{handler,method,status}`` with
grouped statuses such as "2xx", ``http_request_duration_seconds{handler,method}``). The histogram's
buckets are not its default ``(0.1, 0.5, 1)``: with a highest bound of 1 s a p95 over 2 s reads as 1 s
(the quantile of the +Inf bucket is the highest finite bound), so, as a backend watched against a 2 s
target must, the demo sets ``latency_lowr_buckets`` to instrumentator's high-resolution buckets.
"""

from __future__ import annotations

import math
import random
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

# instrumentator's latency_highr_buckets, used as the labelled histogram's buckets (see the module's doc).
BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 2.5, 3, 3.5, 4, 4.5, 5, 7.5, 10, 30, 60)


@dataclass(frozen=True)
class Route:
    """A route of the product and its share of the traffic; latency is log-normal around ``median`` seconds."""

    handler: str
    method: str
    share: float
    median: float
    sigma: float
    median_v2: float | None = None  # under matching_v2_algorithm


ROUTES = (
    Route("/api/matches", "GET", 0.35, 0.45, 0.5, median_v2=0.15),
    Route("/api/coach/messages", "GET", 0.25, 0.12, 0.5),
    Route("/api/coach/messages", "POST", 0.15, 0.6, 0.45),
    Route("/api/profile", "GET", 0.25, 0.04, 0.4),
)
_WEIGHTS = [route.share for route in ROUTES]
USERS = tuple(f"user-{number:03d}" for number in range(1, 51))
V2_FLAG = "matching_v2_algorithm"


@dataclass(frozen=True)
class Behaviour:
    """How a deployed version serves: ``slow-*`` four times slower (p95 over 2 s), ``flaky-*`` 5 % errors."""

    version: str
    latency_factor: float = 1.0
    error_ratio: float = 0.001
    not_found_ratio: float = 0.01  # a profile that is gone: a 4xx, not an error


def behaviour(version: str) -> Behaviour:
    if version.startswith("slow-"):
        return Behaviour(version, latency_factor=4.0)
    if version.startswith("flaky-"):
        return Behaviour(version, error_ratio=0.05)
    return Behaviour(version)


@dataclass(frozen=True)
class Request:
    handler: str
    method: str
    status: int
    seconds: float
    user: str
    v2: bool


def generate(rng: random.Random, count: int, serving: Behaviour, flag_on: Callable[[str], bool]) -> Iterator[Request]:
    """``count`` requests as the version ``serving`` answers them; ``flag_on(user)`` is the v2 flag's answer."""
    for _ in range(count):
        route = rng.choices(ROUTES, _WEIGHTS)[0]
        user = rng.choice(USERS)
        v2 = route.median_v2 is not None and flag_on(user)
        median = route.median_v2 if v2 and route.median_v2 is not None else route.median
        seconds = median * math.exp(rng.gauss(0.0, route.sigma)) * serving.latency_factor
        draw = rng.random()
        if draw < serving.error_ratio:
            status = 500
        elif route.handler == "/api/profile" and draw < serving.error_ratio + serving.not_found_ratio:
            status = 404
        else:
            status = 200
        yield Request(route.handler, route.method, status, seconds, user, v2)


def requests_this_second(rng: random.Random) -> int:
    """About four a second (binomial, 0 to 8)."""
    return sum(rng.random() < 0.5 for _ in range(8))


class Metrics(Collector):
    """The counts instrumentator would keep, in this process's memory (never prometheus_client's
    multiprocess files, which PROMETHEUS_MULTIPROC_DIR would point into the control plane's)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: dict[tuple[str, str, str], float] = {}
        self._buckets: dict[tuple[str, str], list[float]] = {}
        self._sums: dict[tuple[str, str], float] = {}
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(self)

    def observe(self, handler: str, method: str, status: int, seconds: float) -> None:
        grouped = f"{status // 100}xx"
        with self._lock:
            key = (handler, method, grouped)
            self._requests[key] = self._requests.get(key, 0.0) + 1
            counts = self._buckets.setdefault((handler, method), [0.0] * (len(BUCKETS) + 1))
            for index, bound in enumerate(BUCKETS):
                if seconds <= bound:
                    counts[index] += 1
            counts[-1] += 1
            self._sums[(handler, method)] = self._sums.get((handler, method), 0.0) + seconds

    def observe_all(self, requests: Iterable[Request]) -> int:
        seen = 0
        for request in requests:
            self.observe(request.handler, request.method, request.status, request.seconds)
            seen += 1
        return seen

    def describe(self) -> Iterable[Metric]:
        return self._families(empty=True)

    def collect(self) -> Iterable[Metric]:
        return self._families(empty=False)

    def _families(self, *, empty: bool) -> list[Metric]:
        total = CounterMetricFamily(
            "http_requests",
            "Total number of requests by method, status and handler.",
            labels=["handler", "method", "status"],
        )
        duration = HistogramMetricFamily(
            "http_request_duration_seconds",
            "Latency with only few buckets by handler. Made to be only used if aggregation by handler is important.",
            labels=["handler", "method"],
        )
        if not empty:
            with self._lock:
                requests = dict(self._requests)
                buckets = {key: list(counts) for key, counts in self._buckets.items()}
                sums = dict(self._sums)
            for (handler, method, status), value in sorted(requests.items()):
                total.add_metric([handler, method, status], value)
            for (handler, method), counts in sorted(buckets.items()):
                pairs = [(_bound(bound), count) for bound, count in zip(BUCKETS, counts, strict=False)]
                pairs.append(("+Inf", counts[-1]))
                duration.add_metric([handler, method], pairs, sums[(handler, method)])
        return [total, duration]


def _bound(bound: float) -> str:
    return repr(float(bound))
