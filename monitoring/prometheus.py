"""Prometheus metrics, in prometheus-client's multiprocess mode (one file per process under
PROMETHEUS_MULTIPROC_DIR, summed at scrape), so /metrics is right under several gunicorn workers.

Each process adds its request sums at every request-metrics flush (REQUEST_METRICS_FLUSH_SECONDS),
so a scrape sees requests up to that many seconds late, and the request path pays nothing here.

Every family is described (HELP, TYPE) from the first scrape on, before any process has flushed, and the
control plane's state follows as gauges that the apps register (``controlplane.state_metrics``), read
at scrape time."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from django.http import HttpRequest, HttpResponse
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, multiprocess
from prometheus_client.core import Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from controlplane.api import api_view
from controlplane.models import Scope
from controlplane.state_metrics import StateCollector
from monitoring.models import LATENCY_BUCKETS_MS

# The rollups' bounds, in seconds: one bucket list serves both.
_BUCKETS = tuple(bound / 1000 for bound in LATENCY_BUCKETS_MS)

REQUESTS = Counter("controlplane_http_requests_total", "HTTP requests answered", ["view", "method", "status_class"])
LATENCY = Histogram(
    "controlplane_http_request_duration_seconds", "Time to answer a request", ["view"], buckets=_BUCKETS
)


# The labelled children, looked up once per label set.
_children: dict[tuple[str, str, str], tuple[Any, Any]] = {}


def add_sums(view: str, method: str, status_class: str, count: int, seconds: float, buckets: list[int]) -> None:
    """Add a process's summed requests (counts per latency bucket, the same bounds as ours).

    Fed from the request-metrics flush, not per request: prometheus-client has no public call to add
    many observations at once, so this adds to the histogram's own per-bucket values (the ones its
    observe() increments; prometheus-client is pinned, and tests/monitoring checks the output).
    """
    key = (view, method, status_class)
    children = _children.get(key)
    if children is None:
        children = _children[key] = (REQUESTS.labels(view, method, status_class), LATENCY.labels(view))
    counter, histogram = children
    counter.inc(count)
    histogram._sum.inc(seconds)
    for index, observed in enumerate(buckets):
        if observed:
            histogram._buckets[index].inc(observed)


class _RequestCollector:
    """The request families, summed over every process's file (or this process's own counters), each
    described with its own help text, and present with no samples while no process has flushed yet."""

    def collect(self) -> Iterator[Metric]:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            collected = list(multiprocess.MultiProcessCollector(None).collect())
        else:  # a single process (manage.py without the setting): its own counters are all there is
            collected = [*REQUESTS.collect(), *LATENCY.collect()]
        described = {family.name: family for family in (*REQUESTS.describe(), *LATENCY.describe())}
        for family in collected:
            if family.name in described:
                family.documentation = described.pop(family.name).documentation
            yield family
        yield from described.values()  # not flushed yet: HELP and TYPE, no samples


@api_view(scope=Scope.MONITORING_READ)
def metrics(request: HttpRequest) -> HttpResponse:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_RequestCollector())
    registry.register(StateCollector())
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
