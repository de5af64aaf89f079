"""Prometheus metrics, in prometheus-client's multiprocess mode (one file per process under
PROMETHEUS_MULTIPROC_DIR, summed at scrape), so /metrics is right under several gunicorn workers."""

from __future__ import annotations

import os
from typing import Any

from django.http import HttpRequest, HttpResponse
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, multiprocess
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from controlplane.api import api_view
from controlplane.models import Scope

_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

REQUESTS = Counter("controlplane_http_requests_total", "HTTP requests answered", ["view", "method", "status_class"])
LATENCY = Histogram(
    "controlplane_http_request_duration_seconds", "Time to answer a request", ["view"], buckets=_BUCKETS
)


# The labelled children, looked up once per label set: ``labels()`` takes a lock and builds a key on
# every call, which the request path would pay for each request.
_children: dict[tuple[str, str, str], tuple[Any, Any]] = {}


def observe(view: str, method: str, status_class: str, seconds: float) -> None:
    key = (view, method, status_class)
    children = _children.get(key)
    if children is None:
        children = _children[key] = (REQUESTS.labels(view, method, status_class), LATENCY.labels(view))
    children[0].inc()
    children[1].observe(seconds)


@api_view(scope=Scope.MONITORING_READ)
def metrics(request: HttpRequest) -> HttpResponse:
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.MultiProcessCollector(registry)
    else:  # a single process (tests, manage.py): its own counters are all there is
        from prometheus_client import REGISTRY

        registry = REGISTRY
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
