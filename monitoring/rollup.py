"""Per-minute request rollups from scrapes of cumulative counters.

A service's replicas expose cumulative counters: requests, errors, and a latency histogram per route.
A rollup is what happened between two consecutive scrapes of each replica: the counters' increases,
summed over the replicas, from which the request count, error ratio and p50/p95/p99 follow.

- A counter lower than at the previous scrape means the process restarted and its counters began again
  from zero, so the increase is the new value itself (as Prometheus' increase() treats a reset). It is
  read per route: any of a route's counters (requests, errors, a bucket) lower means all of that route's
  counters began again.
- A series that was not there at the previous scrape began from zero in between (an exporter creates a
  route's series on its first request), so it counts whole.
- A failed scrape leaves a gap, never a zero: a replica without both scrapes contributes nothing and is
  named in `missing`; when no replica has both, the minute's figures are None.

The metric names and labels come from a MetricMap; those of prometheus-fastapi-instrumentator,
OpenTelemetry's semantic conventions and django-prometheus are known without configuration.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from monitoring.exposition import Exposition, read_families


@dataclass(frozen=True)
class MetricMap:
    """Where a source's request signals are: a latency histogram and the requests' statuses.

    `requests` names a counter family with a status label; when None, requests and statuses come from
    the histogram's _count (OpenTelemetry puts the status on the histogram). A status is an error when it
    matches one of `errors`: "5xx" matches "5xx" and any 5.. code, "429" only itself.
    """

    histogram: str
    requests: str | None
    route_label: str
    status_label: str
    errors: tuple[str, ...] = ("5xx",)

    @property
    def families(self) -> set[str]:
        return {self.histogram} | ({self.requests} if self.requests else set())

    def is_error(self, status: str) -> bool:
        return any(_status_matches(status, pattern) for pattern in self.errors)


def _status_matches(status: str, pattern: str) -> bool:
    if len(pattern) == 3 and pattern[1:].lower() == "xx":
        return len(status) == 3 and status[0] == pattern[0]
    return status == pattern


INSTRUMENTATOR = MetricMap(
    histogram="http_request_duration_seconds",
    requests="http_requests_total",
    route_label="handler",
    status_label="status",
)
OPENTELEMETRY = MetricMap(
    histogram="http_server_request_duration_seconds",
    requests=None,
    route_label="http_route",
    status_label="http_response_status_code",
)
DJANGO_PROMETHEUS = MetricMap(
    histogram="django_http_requests_latency_seconds_by_view_method",
    requests="django_http_responses_total_by_status_view_method",
    route_label="view",
    status_label="status",
)
KNOWN_MAPS = (INSTRUMENTATOR, OPENTELEMETRY, DJANGO_PROMETHEUS)


def recognise(exposition: Exposition, maps: Iterable[MetricMap] = KNOWN_MAPS) -> MetricMap | None:
    """The first map whose histogram the exposition carries (read with all the maps' families).

    A histogram declared by its TYPE line without a sample yet counts: a freshly started process that
    has served no request exposes its families empty, and is a service with no traffic, not an
    unrecognised one.
    """
    return next(
        (known for known in maps if exposition.family(known.histogram) or known.histogram in exposition.types),
        None,
    )


@dataclass(frozen=True)
class Counters:
    """Cumulative counts (or, for a rollup, their increases) of one route.

    `buckets` maps a bucket's upper bound (math.inf last) to the count of requests at or under it.
    """

    requests: float = 0.0
    errors: float = 0.0
    buckets: Mapping[float, float] = field(default_factory=dict)

    def __add__(self, other: Counters) -> Counters:
        buckets = dict(self.buckets)
        for bound, count in other.buckets.items():
            buckets[bound] = buckets.get(bound, 0.0) + count
        return Counters(self.requests + other.requests, self.errors + other.errors, buckets)

    def increase_since(self, previous: Counters | None) -> Counters:
        """What was counted since `previous`. When any of the route's counters went down (its requests,
        its errors or any bucket), the process restarted and all of them began again from zero: the
        increase is then every counter's value itself, never a mix of differences and values, which
        would count some requests in the errors or buckets but not in the requests."""
        if previous is None or self.reset_since(previous):
            return self
        buckets = {bound: count - previous.buckets.get(bound, 0.0) for bound, count in self.buckets.items()}
        return Counters(self.requests - previous.requests, self.errors - previous.errors, buckets)

    def reset_since(self, previous: Counters) -> bool:
        if self.requests < previous.requests or self.errors < previous.errors:
            return True
        return any(count < previous.buckets.get(bound, 0.0) for bound, count in self.buckets.items())

    @property
    def error_ratio(self) -> float | None:
        return self.errors / self.requests if self.requests else None

    def quantile(self, q: float) -> float | None:
        return histogram_quantile(q, self.buckets)

    @property
    def p50(self) -> float | None:
        return self.quantile(0.5)

    @property
    def p95(self) -> float | None:
        return self.quantile(0.95)

    @property
    def p99(self) -> float | None:
        return self.quantile(0.99)

    def under(self, threshold: float) -> float | None:
        """How many requests took at most `threshold` seconds (what a latency SLO counts as good)."""
        return count_under(threshold, self.buckets)


def histogram_quantile(q: float, buckets: Mapping[float, float]) -> float | None:
    """The q-quantile of cumulative buckets, as Prometheus' histogram_quantile computes it.

    Linear interpolation within the bucket holding the rank (the first bucket starting at 0); a rank in
    the +Inf bucket gives the highest finite bound. None when there were no observations or no +Inf
    bucket, where Prometheus gives NaN.
    """
    if not 0 <= q <= 1:
        raise ValueError(f"a quantile is between 0 and 1, not {q!r}")
    bounds = sorted(buckets)
    if len(bounds) < 2 or bounds[-1] != math.inf:
        return None
    counts: list[float] = []
    for bound in bounds:
        # Counts must not decrease with the bound; a scrape racing the exporter can make them.
        counts.append(max(buckets[bound], counts[-1] if counts else 0.0))
    observations = counts[-1]
    if observations == 0:
        return None
    rank = q * observations
    index = next(i for i, count in enumerate(counts) if count >= rank)
    if index == len(bounds) - 1:
        return bounds[-2]
    if index == 0 and bounds[0] <= 0:
        return bounds[0]
    start = bounds[index - 1] if index > 0 else 0.0
    below = counts[index - 1] if index > 0 else 0.0
    if counts[index] == below:
        # Only for q = 0 over empty first buckets, where Prometheus divides 0 by 0 and gives NaN.
        return start
    return start + (bounds[index] - start) * ((rank - below) / (counts[index] - below))


def count_under(threshold: float, buckets: Mapping[float, float]) -> float | None:
    """The count of observations at or under `threshold`, read from cumulative buckets.

    Exact on a bucket's bound; between two bounds, interpolated linearly as histogram_quantile does;
    above the highest finite bound, that bound's count (what lies beyond cannot be told from the +Inf
    bucket, so it is not counted as under). None without buckets.
    """
    bounds = sorted(bound for bound in buckets if bound != math.inf)
    if not bounds:
        return None
    previous_bound, previous_count = 0.0, 0.0
    for bound in bounds:
        count = max(buckets[bound], previous_count)
        if threshold <= bound:
            if threshold <= previous_bound:
                return previous_count
            share = (threshold - previous_bound) / (bound - previous_bound)
            return previous_count + (count - previous_count) * share
        previous_bound, previous_count = bound, count
    return previous_count


def combine(rollups: Iterable[Rollup]) -> Counters | None:
    """The service's counts over consecutive rollups (a window), gaps left out; None if all were gaps."""
    present = [item.service for item in rollups if item.service is not None]
    if not present:
        return None
    result = Counters()
    for counters in present:
        result = result + counters
    return result


def route_counters(exposition: Exposition, metric_map: MetricMap) -> dict[str, Counters]:
    """One replica's cumulative counters per route, summed over methods and statuses.

    Buckets are summed over the histogram's other labels for each route; the requests and errors come
    from the requests family, or from the histogram's _count when the map names none.
    """
    requests: dict[str, float] = {}
    errors: dict[str, float] = {}
    buckets: dict[str, dict[float, float]] = {}
    count_name = metric_map.histogram + "_count"
    bucket_name = metric_map.histogram + "_bucket"
    for sample in exposition.family(metric_map.histogram):
        route = sample.labels.get(metric_map.route_label, "")
        if sample.name == bucket_name:
            bound = float(sample.labels.get("le", "nan"))
            if not math.isnan(bound):
                per_route = buckets.setdefault(route, {})
                per_route[bound] = per_route.get(bound, 0.0) + sample.value
        elif sample.name == count_name and metric_map.requests is None:
            _count(requests, errors, route, sample.labels, sample.value, metric_map)
    if metric_map.requests is not None:
        for sample in exposition.family(metric_map.requests):
            route = sample.labels.get(metric_map.route_label, "")
            _count(requests, errors, route, sample.labels, sample.value, metric_map)
    routes = set(requests) | set(buckets)
    return {
        route: Counters(requests.get(route, 0.0), errors.get(route, 0.0), buckets.get(route, {})) for route in routes
    }


def _count(
    requests: dict[str, float],
    errors: dict[str, float],
    route: str,
    labels: Mapping[str, str],
    value: float,
    metric_map: MetricMap,
) -> None:
    requests[route] = requests.get(route, 0.0) + value
    if metric_map.is_error(labels.get(metric_map.status_label, "")):
        errors[route] = errors.get(route, 0.0) + value


def read_scrape(text: str, metric_map: MetricMap) -> dict[str, Counters]:
    """A replica's counters per route from the text of its /metrics; ExpositionError when it is not one."""
    return route_counters(read_families(text, metric_map.families), metric_map)


@dataclass(frozen=True)
class ReplicaScrape:
    """One scrape of one replica: its counters per route, or None when the scrape failed."""

    replica: str
    at: datetime
    routes: Mapping[str, Counters] | None
    error: str = ""


@dataclass(frozen=True)
class Rollup:
    """What the service's replicas counted between two scrapes: per route, and for the whole service.

    `routes` and `service` are None when no replica was scraped successfully both times: a gap, not a
    quiet minute. `missing` names the replicas left out because one of their two scrapes failed.
    """

    start: datetime
    end: datetime
    routes: Mapping[str, Counters] | None
    service: Counters | None
    missing: tuple[str, ...] = ()


def rollup(
    previous: Iterable[ReplicaScrape], current: Iterable[ReplicaScrape], start: datetime, end: datetime
) -> Rollup:
    """The increases between two consecutive rounds of scrapes, summed over the replicas."""
    before = {scrape.replica: scrape for scrape in previous}
    routes: dict[str, Counters] = {}
    service = Counters()
    missing: set[str] = set(before)
    answered = 0
    for scrape in current:
        earlier = before.get(scrape.replica)
        if scrape.routes is None or earlier is None or earlier.routes is None:
            missing.add(scrape.replica)
            continue
        missing.discard(scrape.replica)
        answered += 1
        for route, counters in scrape.routes.items():
            increase = counters.increase_since(earlier.routes.get(route))
            routes[route] = routes.get(route, Counters()) + increase
            service = service + increase
    if not answered:
        return Rollup(start, end, None, None, tuple(sorted(missing)))
    return Rollup(start, end, routes, service, tuple(sorted(missing)))
