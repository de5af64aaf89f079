"""/metrics: each service's signals over the last 5 minutes and each metric source's up, as gauges."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from controlplane.state_metrics import collect_state
from monitoring.models import MetricSource, Service, SignalSample, SourceKind
from tests.monitoring.service_data import SLOW, add_minutes, make_service, this_minute
from tests.monitoring.test_prometheus_state import scrape, values

pytestmark = pytest.mark.django_db

FAMILIES = (
    "controlplane_service_request_rate",
    "controlplane_service_error_ratio",
    "controlplane_service_latency_seconds",
    "controlplane_service_up",
    "controlplane_service_source_up",
)


@pytest.fixture
def reader(api_client):
    return api_client("monitoring:read")


def test_every_service_family_is_described_before_any_service_exists(reader):
    families = scrape(reader)
    text = families[""]
    for name in FAMILIES:
        assert families[name].type == "gauge" and families[name].documentation, name
        assert families[name].samples == []
        assert f"# HELP {name} " in text and f"# TYPE {name} gauge" in text


def test_each_service_signals_and_each_source_up(reader):
    backend = make_service("wingmanmatch-backend")
    add_minutes(backend, minutes=4, requests=100, errors=2, scrapes=4, failed=1)
    MetricSource.objects.filter(service=backend).update(up=True)
    slow = make_service("wingmanmatch-search")
    add_minutes(slow, minutes=4, buckets=SLOW)
    MetricSource.objects.create(service=slow, kind=SourceKind.SCRAPE, urls="http://127.0.0.1:9/b", up=False)
    make_service("wingmanmatch-quiet")  # never scraped: no sample anywhere, not a 0
    off = make_service("wingmanmatch-retired")
    Service.objects.filter(pk=off.pk).update(enabled=False)
    add_minutes(off, minutes=4)

    families = scrape(reader)

    rate = values(families["controlplane_service_request_rate"])
    assert rate == {("wingmanmatch-backend",): pytest.approx(4 / 3), ("wingmanmatch-search",): pytest.approx(4 / 3)}
    errors = values(families["controlplane_service_error_ratio"])
    assert errors[("wingmanmatch-backend",)] == pytest.approx(0.02) and errors[("wingmanmatch-search",)] == 0.0
    latency = values(families["controlplane_service_latency_seconds"])  # labels sorted: quantile, service
    assert latency[("0.95", "wingmanmatch-backend")] == pytest.approx(1.5)
    assert latency[("0.95", "wingmanmatch-search")] == pytest.approx(4.6875)
    assert latency[("0.5", "wingmanmatch-search")] == pytest.approx(2.0)
    assert {quantile for quantile, _ in latency} == {"0.5", "0.95", "0.99"}
    up = values(families["controlplane_service_up"])
    assert up == {("wingmanmatch-backend",): 0.75, ("wingmanmatch-search",): 1.0}

    sources = values(families["controlplane_service_source_up"])  # labels sorted: kind, service, source
    assert {(kind, service): value for (kind, service, _), value in sources.items()} == {
        ("scrape", "wingmanmatch-backend"): 1.0,
        ("scrape", "wingmanmatch-search"): 0.0,
    }
    assert not any("retired" in key for family in FAMILIES for key in map(str, values(families[family])))


def test_a_prometheus_source_shows_the_values_it_last_stored(reader):
    service = Service.objects.create(name="wingmanmatch-api")
    MetricSource.objects.create(service=service, kind=SourceKind.PROMETHEUS, urls="http://127.0.0.1:9", up=True)
    SignalSample.objects.create(service=service, at=this_minute(), signal="p95", value=0.8)
    SignalSample.objects.create(service=service, at=this_minute(), signal="up", value=1.0)
    families = scrape(reader)
    assert values(families["controlplane_service_latency_seconds"]) == {("0.95", "wingmanmatch-api"): 0.8}
    assert values(families["controlplane_service_up"]) == {("wingmanmatch-api",): 1.0}
    assert values(families["controlplane_service_source_up"]) == {("prometheus", "wingmanmatch-api", str(
        MetricSource.objects.get().pk)): 1.0}  # fmt: skip


def test_service_reads_do_not_grow_with_the_services():
    def count() -> int:
        with CaptureQueriesContext(connection) as queries:
            list(collect_state())
        return len(queries)

    one = make_service("svc-0")
    add_minutes(one, minutes=4)
    with_one = count()
    for i in range(1, 8):
        add_minutes(make_service(f"svc-{i}"), minutes=4)
    assert count() == with_one
