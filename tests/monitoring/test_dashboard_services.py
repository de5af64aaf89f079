"""The dashboard's Services panel: the product's services (up, request rate, error ratio, p95 with its
sparkline, uptime over 24 h, 7 and 30 days, SLO budget), its job monitors and monitored endpoints; the
health score they lower; and a query count that grows neither with the services nor with their rows."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from controlplane.localcopy import forget_all
from monitoring.dashboard import CHART_CACHE_KEY, charts_refresh, health, product_deductions
from monitoring.models import (
    HealthMetric,
    JobMonitor,
    MetricSource,
    MonitoredEndpoint,
    Service,
    ServiceHour,
    ServiceLevelObjective,
    ServiceMinute,
    SignalSample,
    SourceKind,
)
from monitoring.services_panel import read

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _no_dashboard_cache():
    """The dashboard's cache (charts, endpoint uptime, SLO budgets) as beat would leave it: not yet filled."""
    cache.delete(CHART_CACHE_KEY)
    yield
    cache.delete(CHART_CACHE_KEY)


BOUNDS = ("0.05", "0.1", "0.25", "0.5", "1.0", "2.5", "5.0", "+Inf")


def buckets(requests: float, slow: bool = False) -> dict[str, float]:
    """Cumulative buckets: 10 % under 50 ms, all of them under 250 ms (or, slow, half over 2.5 s)."""
    if slow:
        return dict(zip(BOUNDS, [0, 0, 0, 0, 0, requests / 2, requests, requests], strict=True))
    return dict(zip(BOUNDS, [requests / 10, requests / 2, *[requests] * 6], strict=True))


def service(name: str = "backend", kind: str = SourceKind.SCRAPE) -> Service:
    found = Service.objects.create(name=name, description=f"{name} of the product")
    MetricSource.objects.create(service=found, kind=kind, urls="http://127.0.0.1:9/metrics")
    return found


def minutes(svc, now, count=60, requests=600.0, errors=3.0, slow=False, gaps=(), failed=()):
    """``count`` whole minutes before now, 4 scrapes each; a gap has no requests (its scrapes failed)."""
    this_minute = now.replace(second=0, microsecond=0)
    rows = []
    for ago in range(1, count + 1):
        gap = ago in gaps
        rows.append(
            ServiceMinute(
                service=svc,
                minute=this_minute - timedelta(minutes=ago),
                route="",
                requests=None if gap else requests,
                errors=None if gap else errors,
                buckets={} if gap else buckets(requests, slow),
                scrapes=4,
                failed=4 if gap else (1 if ago in failed else 0),
            )
        )
    ServiceMinute.objects.bulk_create(rows)


def hours(svc, now, count=30 * 24, failed_every=0):
    """``count`` hourly rows before the current hour, 240 scrapes each; every ``failed_every``-th hour 24 failed."""
    current = now.replace(minute=0, second=0, microsecond=0)
    ServiceHour.objects.bulk_create(
        ServiceHour(
            service=svc,
            hour=current - timedelta(hours=ago),
            requests=36000,
            errors=180,
            buckets=buckets(36000),
            scrapes=240,
            failed=24 if failed_every and ago % failed_every == 0 else 0,
        )
        for ago in range(1, count + 1)
    )


def this_minute(now):
    return now.replace(second=0, microsecond=0)


def this_hour(now):
    return now.replace(minute=0, second=0, microsecond=0)


def counted_minutes(now, window=timedelta(minutes=5)) -> int:
    """How many of the whole minutes before now start within the window ending now (4, or 5 on the minute)."""
    this_minute = now.replace(second=0, microsecond=0)
    return sum(1 for m in range(1, 6) if this_minute - timedelta(minutes=m) >= now - window)


def get(client) -> str:
    response = client.get("/")
    assert response.status_code == 200
    return response.content.decode()


def row(html: str, name: str) -> str:
    return re.search(rf'<tr id="service-{name}".*?</tr>', html, re.S).group(0)


def test_a_service_with_data_shows_its_signals_sparkline_and_uptime(operator_client):
    now = timezone.now()
    svc = service()
    minutes(svc, now)
    html = get(operator_client)

    found = row(html, "backend")
    assert 'data-status="up"' in found
    rate = counted_minutes(now) * 600 / 300  # per second over 5 min
    assert f'<td class="rate secondary">{rate:g} req/s</td>' in found
    assert '<td class="errors">0.5 %</td>' in found
    assert '<span class="value">235 ms</span>' in found  # p95 inside the 0.1-0.25 s bucket
    assert re.search(
        r'<svg class="spark"[^>]*aria-label="backend over the last hour: p95 per minute from 235 to 235 ms"', found
    )
    assert re.search(r'<path d="M[\d.]+,[\d.]+( L[\d.]+,[\d.]+){59}"/>', found)  # one unbroken line, 60 minutes
    # No hour rolled up yet: each window is the current hour's minutes (the earlier ones wait for their hour).
    tail = 4 * sum(1 for m in range(1, 61) if this_minute(now) - timedelta(minutes=m) >= this_hour(now))
    for window in ("24h", "7d", "30d"):
        words = f'{tail} of {tail} succeeded in the last {window[:-1]} {window[-1]}">100 %'
        words = words if tail else f'nothing measured in the last {window[:-1]} {window[-1]}">–'
        assert f'<span data-window="{window}" title="{words}</span>' in found
    assert "no SLO" in found
    # Services come first; the control plane's own charts below, titled as its own.
    assert html.index('id="services-title"') < html.index('id="score-title"') < html.index('id="charts-title"')
    assert '<h2 id="charts-title">Control plane requests</h2>' in html


def test_the_request_rate_is_per_second_over_the_last_five_minutes(operator_client):
    now = timezone.now()
    svc = service()
    minutes(svc, now, count=5, requests=300.0, errors=0)  # minutes 1..5 ago: those at or after now - 5 min count
    panel = read(now)
    assert panel.services[0].request_rate == pytest.approx(counted_minutes(now) * 300 / 300)
    assert panel.services[0].error_text == "0 %"


def test_the_slo_budget_left_is_the_smallest_of_the_services_slos(operator_client):
    now = timezone.now()
    for name in ("backend", "worker"):
        svc = service(name)
        minutes(svc, now, errors=3.0)  # 0.5 % errors, as in the hours
        hours(svc, now, count=48)
    ServiceLevelObjective.objects.create(service=Service.objects.get(name="backend"), name="avail", target_percent=99)
    worker = Service.objects.get(name="worker")
    ServiceLevelObjective.objects.create(service=worker, name="loose", target_percent=99)
    ServiceLevelObjective.objects.create(service=worker, name="strict", target_percent=99.9)
    html = get(operator_client)

    backend = re.search(r'<td class="slo">(.*?)</td>', row(html, "backend")).group(1)
    assert 'data-status="pass"' in backend and "50.0 % left" in backend  # half of a 1 % budget spent
    assert 'data-status="failed"' in row(html, "worker") and "exhausted" in row(html, "worker")


def test_no_service_and_no_job_says_how_to_add_one(operator_client):
    html = get(operator_client)
    found = re.search(r'<p id="services-empty">(.*?)</p>', html, re.S).group(1)
    assert "No service of the product is watched yet." in found
    assert "Add a service in admin" in found
    assert '<table class="services">' not in html


def test_gaps_break_the_sparkline_and_failed_scrapes_lower_uptime(operator_client):
    now = timezone.now()
    svc = service()
    minutes(svc, now, gaps=range(20, 31), failed=(2, 3))
    hours(svc, now, count=48, failed_every=12)
    html = get(operator_client)
    found = row(html, "backend")

    path = re.search(r'<path d="([^"]+)"/>', found).group(1)
    assert path.count("M") == 2, path  # the gap splits the line in two, it does not draw a zero
    assert "11 minutes without data" in found
    # The whole hours from the hourly rows (240 scrapes each, every 12th with 24 failed), the current hour
    # from its minutes (4 scrapes each; 11 all failed, 2 with one failed).
    tail = [m for m in range(1, 61) if this_minute(now) - timedelta(minutes=m) >= this_hour(now)]
    tail_total = 4 * len(tail)
    tail_failed = sum(4 if m in range(20, 31) else 1 if m in (2, 3) else 0 for m in tail)
    day_hours = 24 if now == this_hour(now) else 23  # the hour the 24 h begin in is only partly inside
    for window, count in (("24h", day_hours), ("7d", 48)):
        good = count * 240 - (count // 12) * 24 + tail_total - tail_failed
        total = count * 240 + tail_total
        assert f'<span data-window="{window}" title="{good} of {total} succeeded in the last' in found


def test_a_service_never_scraped_waits_and_a_failing_one_is_down_with_its_error(operator_client):
    now = timezone.now()
    service("quiet")
    failing = service("broken")
    MetricSource.objects.filter(service=failing).update(last_error="connection refused")
    minutes(failing, now, count=10, gaps=range(1, 11))
    html = get(operator_client)

    assert 'data-status="waiting"' in row(html, "quiet") and "no data" in row(html, "quiet")
    broken = row(html, "broken")
    assert 'data-status="down"' in broken and "connection refused" in broken
    assert "<svg" not in broken  # no minute had requests: no line
    assert "service broken down (connection refused)" in html
    assert "service quiet" not in html  # a service with no data yet lowers nothing


def test_job_monitors_show_their_state_and_last_ping(operator_client):
    now = timezone.now()
    JobMonitor.objects.create(name="weekly-digest", state="down", last_ping=now - timedelta(hours=3))
    JobMonitor.objects.create(name="reminders", state="up", last_ping=now - timedelta(minutes=2))
    JobMonitor.objects.create(name="cleanup")
    html = get(operator_client)

    digest = re.search(r'<li id="job-weekly-digest">.*?</li>', html, re.S).group(0)
    assert 'data-status="down"' in digest and "last ping 3\xa0hours ago" in digest
    assert "never pinged" in re.search(r'<li id="job-cleanup">.*?</li>', html, re.S).group(0)
    assert 'id="services-empty"' not in html  # jobs alone are something to show
    assert "job weekly-digest down" in html


def test_the_score_counts_the_products_services_and_jobs():
    now = timezone.now()
    fast, slow, erring, down = (service(n) for n in ("fast", "slow", "erring", "down"))
    minutes(fast, now, count=10)
    minutes(slow, now, count=10, slow=True)
    minutes(erring, now, count=10, errors=60)
    minutes(down, now, count=10, gaps=range(1, 11))
    JobMonitor.objects.create(name="late-job", state="late")
    JobMonitor.objects.create(name="down-job", state="down")
    JobMonitor.objects.create(name="paused-job", state="paused")
    panel = read(now)

    found = {d.reason.split(" (")[0]: d.points for d in product_deductions(panel.services, panel.jobs)}
    assert found == {
        "service down down": 15,
        "service erring error ratio 10 %": 10,
        "service slow p95 4.75 s": 5,
        "job late-job late": 5,
        "job down-job down": 10,
    }
    score, deductions, tiles = health(now, [], panel.services, panel.jobs)
    assert tiles == [] and score == 100 - 45  # no check has reported: the product alone gives a score


def test_nothing_known_yet_gives_no_score():
    service("fresh")
    JobMonitor.objects.create(name="new-job")
    panel = read()
    assert health(timezone.now(), [], panel.services, panel.jobs)[0] is None


def test_a_prometheus_source_shows_its_stored_values():
    now = timezone.now()
    svc = service("remote", kind=SourceKind.PROMETHEUS)
    SignalSample.objects.bulk_create(
        SignalSample(service=svc, at=now - timedelta(minutes=m), signal=signal, value=value)
        for m in (1, 3, 20)
        for signal, value in (("up", 1.0), ("p95", 0.3 + m / 100), ("error_ratio", 0.002), ("request_rate", 4.5))
    )
    found = read(now).services[0]
    assert (found.status, found.rate_text, found.error_text, found.p95_text) == ("up", "4.5 req/s", "0.2 %", "310 ms")
    assert found.sparkline.startswith("M") and found.sparkline.count("L") == 2


def test_endpoint_uptime_over_each_window(operator_client):
    now = timezone.now()
    MonitoredEndpoint.objects.create(name="api", url="http://127.0.0.1:9/health")
    MonitoredEndpoint.objects.create(name="web", url="http://127.0.0.1:9/")

    def probe(ago, status):
        return HealthMetric(
            time=now - ago, component="endpoint:api", measurement="responseTime", value=3, unit="ms", status=status
        )

    HealthMetric.objects.bulk_create(
        [probe(timedelta(minutes=m), "fail" if m == 5 else "warn" if m == 6 else "pass") for m in range(1, 11)]
        + [probe(timedelta(days=d), "fail") for d in (2, 3)]  # in the 7 days
        + [probe(timedelta(days=d), "pass") for d in (10, 20, 40)]  # 10 and 20 in the 30 days; 40 in none
    )
    cache.delete(CHART_CACHE_KEY)
    charts_refresh(now - timedelta(minutes=1))  # what beat stored a minute ago: the full hours
    html = get(operator_client)
    api = re.search(r'<tr id="endpoint-api">.*?</tr>', html, re.S).group(0)
    assert '<td data-window="24h" title="9 of 10 succeeded in the last 24 h">90 %</td>' in api  # a warn is up
    assert '<td data-window="7d" title="9 of 12 succeeded in the last 7 d">75 %</td>' in api
    assert '<td data-window="30d" title="11 of 14 succeeded in the last 30 d">78.571 %</td>' in api
    web = re.search(r'<tr id="endpoint-web">.*?</tr>', html, re.S).group(0)
    assert 'title="nothing measured in the last 24 h">–</td>' in web


# --- Query count --------------------------------------------------------------------------------------


def product(count: int, now) -> None:
    for n in range(count):
        svc = service(f"svc-{n:02d}")
        minutes(svc, now, count=60 if n % 2 else 30, gaps=(7,) if n % 3 else ())
        hours(svc, now, count=24 * (n % 5 + 1))
        JobMonitor.objects.create(name=f"job-{n:02d}", state="up", last_ping=now)
    MonitoredEndpoint.objects.get_or_create(name="api", url="http://127.0.0.1:9/health")


def queries_of_the_page(client) -> tuple[int, str, list[str]]:
    """Queries of ``/`` with the dashboard's cache warm (beat refreshes it every minute) and the flags
    not loaded in this process."""
    charts_refresh()
    forget_all()
    with CaptureQueriesContext(connection) as captured:
        html = get(client)
    return len(captured), html, [q["sql"] for q in captured]


def test_the_number_of_queries_is_the_same_for_one_service_and_twenty(operator_client):
    now = timezone.now()
    product(1, now)
    one, _, one_sql = queries_of_the_page(operator_client)
    for n in range(1, 20):
        svc = service(f"more-{n:02d}")
        minutes(svc, now, count=60, gaps=(3, 4) if n % 2 else ())
        hours(svc, now, count=30 * 24 if n % 4 == 0 else 48)
        JobMonitor.objects.create(name=f"more-job-{n:02d}", state="late" if n % 3 else "up", last_ping=now)
    twenty, html, twenty_sql = queries_of_the_page(operator_client)
    assert twenty == one, "\n".join(twenty_sql)
    assert len(re.findall(r'<tr id="service-', html)) == 20
    assert len(re.findall(r'<li id="job-', html)) == 20


def test_the_panel_reads_in_a_fixed_number_of_queries(django_assert_max_num_queries):
    now = timezone.now()
    product(20, now)
    # services; the signals' sources and minutes; uptime's minutes and hours; the sources' kinds and the
    # sparklines' minutes; the hour's changes for their markers; jobs; endpoints
    with django_assert_max_num_queries(10):
        panel = read(now, lambda names, at: {}, {})
    assert len(panel.services) == 20 and len(panel.endpoints) == 1
