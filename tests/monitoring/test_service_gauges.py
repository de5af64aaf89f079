"""/metrics: each service's signals over the last 5 minutes and each metric source's up, as gauges."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from controlplane.state_metrics import collect_state
from monitoring.dashboard import CHART_CACHE_KEY, charts_refresh
from monitoring.models import (
    HealthMetric,
    JobMonitor,
    MetricSource,
    MonitoredEndpoint,
    Service,
    ServiceLevelObjective,
    SignalSample,
    SourceKind,
)
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
# Read from what beat's chart refresh keeps in the cache: no sample before its first refresh.
CACHED_FAMILIES = (
    "controlplane_slo_budget_left_ratio",
    "controlplane_slo_burn_rate",
    "controlplane_service_uptime_ratio",
    "controlplane_endpoint_uptime_ratio",
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


def _mid_hour():
    """An hour ago at half past: every minute of the data below inside one hour, whenever the test runs."""
    return (timezone.now() - timedelta(hours=1)).replace(minute=30, second=0, microsecond=0)


def _product(now):
    backend = make_service("wingmanmatch-backend")
    add_minutes(backend, minutes=5, requests=100, errors=2, scrapes=4, failed=1, end=now)
    ServiceLevelObjective.objects.create(service=backend, name="availability", target_percent=99)
    MonitoredEndpoint.objects.create(name="api", url="http://127.0.0.1:9/health")

    def probe(ago, status):
        return HealthMetric(
            time=now - ago, component="endpoint:api", measurement="responseTime", value=3, unit="ms", status=status
        )

    # In the whole hours before the refresh's: what beat counts; 1 of 3 failed.
    HealthMetric.objects.bulk_create(
        [probe(timedelta(hours=2, minutes=m), s) for m, s in enumerate(("pass", "pass", "fail"))]
    )
    return backend


def test_slo_and_uptime_families_are_described_without_samples_before_beats_first_refresh(reader):
    _product(_mid_hour())
    cache.delete(CHART_CACHE_KEY)
    families = scrape(reader)
    for name in CACHED_FAMILIES + ("controlplane_job_monitor_last_ping_timestamp_seconds",):
        assert families[name].type == "gauge" and families[name].documentation, name
        assert families[name].samples == [], name
        assert f"# HELP {name} " in families[""] and f"# TYPE {name} gauge" in families[""]


def test_slo_budget_burn_rates_and_uptime_as_beat_last_computed_them(reader):
    now = _mid_hour()
    _product(now)
    charts_refresh(now)  # beat's refresh
    families = scrape(reader)

    # 2 % of the requests failed against a 1 % budget: it burns twice as fast as it may, and the
    # 28 days' budget (only these 5 minutes in it) is overspent by as much again.
    budget = values(families["controlplane_slo_budget_left_ratio"])  # service, slo
    assert budget == {("wingmanmatch-backend", "availability"): pytest.approx(-1.0)}
    burn = values(families["controlplane_slo_burn_rate"])  # service, slo, window
    windows = {window: rate for (_, _, window), rate in burn.items()}
    assert {"30m", "1h", "6h", "3d"} <= set(windows) <= {"5m", "30m", "1h", "6h", "3d"}
    assert all(rate == pytest.approx(2.0) for rate in windows.values())
    # 4 scrapes a minute, 1 failed: 75 % up over every window holding these minutes.
    uptime = values(families["controlplane_service_uptime_ratio"])  # service, window
    assert uptime == {("wingmanmatch-backend", w): pytest.approx(0.75) for w in ("24h", "7d", "30d")}
    endpoints = values(families["controlplane_endpoint_uptime_ratio"])  # endpoint, window
    assert endpoints == {("api", w): pytest.approx(2 / 3) for w in ("24h", "7d", "30d")}


def test_a_page_refresh_leaves_the_slo_figures_to_beat(reader):
    """A page that found the cache empty refreshes it without asking a Prometheus server: the burn rates
    (which beat computes with the SLO page's windows) wait for beat's next refresh."""
    now = _mid_hour()
    _product(now)
    charts_refresh(now, evaluate_prometheus=False)
    families = scrape(reader)
    assert families["controlplane_slo_burn_rate"].samples == []
    assert values(families["controlplane_service_uptime_ratio"])[("wingmanmatch-backend", "24h")] == 0.75


def test_each_job_monitors_last_ping_and_duration(reader):
    pinged = timezone.now().replace(microsecond=0) - timedelta(minutes=3)
    JobMonitor.objects.create(name="digest", last_ping=pinged, last_duration=timedelta(seconds=90))
    JobMonitor.objects.create(name="reminders")  # never pinged: no sample, not a 0
    families = scrape(reader)
    assert values(families["controlplane_job_monitor_last_ping_timestamp_seconds"]) == {("digest",): pinged.timestamp()}
    assert values(families["controlplane_job_monitor_last_duration_seconds"]) == {("digest",): 90.0}


def test_a_scrape_reads_no_slo_window_and_its_queries_do_not_grow_with_slos_or_endpoints():
    """The SLOs and uptime come from the cache: the scrape's queries are the same with one SLO and
    endpoint as with eight, and none of them reads the SLOs or the hourly rollups."""
    now = _mid_hour()
    _product(now)
    charts_refresh(now)

    def queries() -> list[str]:
        with CaptureQueriesContext(connection) as captured:
            list(collect_state())
        return [query["sql"].lower() for query in captured]

    with_one = queries()
    for i in range(7):
        service = make_service(f"svc-{i}")
        add_minutes(service, minutes=5, end=now)
        ServiceLevelObjective.objects.create(service=service, name="availability", target_percent=99.9)
        MonitoredEndpoint.objects.create(name=f"ep-{i}", url="http://127.0.0.1:9/")
    charts_refresh(now)
    with_eight = queries()
    assert len(with_eight) == len(with_one)
    assert not any("servicehour" in sql or "servicelevelobjective" in sql for sql in with_eight)
    families = {f.name: f for f in collect_state()}
    assert len(families["controlplane_slo_burn_rate"].samples) >= 8 * 4


def test_the_cache_down_leaves_the_families_described_and_the_scrape_up(reader, settings):
    from tests.conftest import free_port

    settings.CACHES = {
        **settings.CACHES,
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{free_port()}/0",  # nothing listens there
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.5, "SOCKET_TIMEOUT": 0.5},
        },
    }
    families = scrape(reader)
    for name in CACHED_FAMILIES:
        assert families[name].samples == [] and f"# TYPE {name} gauge" in families[""]
    assert values(families["controlplane_state_collector_up"])[("monitoring",)] == 1.0
