"""Request metrics: per-minute rollups by view name, percentiles, /metrics, the performance API."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from monitoring.models import BUCKET_FIELDS, RequestRollup
from monitoring.request_metrics import _add, flush
from monitoring.selectors import percentile_from_buckets, request_figures

pytestmark = pytest.mark.django_db


def test_requests_are_rolled_up_by_view_name_not_path(operator_client):
    operator_client.get("/flags/")
    operator_client.get("/flags/")
    operator_client.get("/flags/no-such-flag/")  # 404, same view as any flag page
    operator_client.get("/flags/other/")
    assert flush() >= 2
    rows = {(r.view, r.method, r.status_class): r for r in RequestRollup.objects.all()}
    listing = rows[("flags:list", "GET", "2xx")]
    assert listing.count == 2 and listing.errors == 0
    assert listing.db_ms_sum > 0  # the page queries the flags
    assert sum(getattr(listing, f) for f in BUCKET_FIELDS) == 2
    assert rows[("flags:detail", "GET", "4xx")].count == 2
    assert not any("/flags/" in view for view, _, _ in rows)


def test_slow_queries_are_counted_per_request(operator_client, settings):
    operator_client.get("/flags/")
    flush()
    fast = RequestRollup.objects.get(view="flags:list")
    assert fast.slow_queries == 0 and fast.db_ms_sum > 0
    RequestRollup.objects.all().delete()
    settings.SLOW_QUERY_MS = 0  # every query is slow
    operator_client.get("/flags/")
    flush()
    slow = RequestRollup.objects.get(view="flags:list")
    assert slow.count == 1 and slow.slow_queries >= 1


def test_5xx_counts_as_error(client, settings):
    settings.ROOT_URLCONF = "tests.controlplane.urls_faulty"
    from django.test import Client

    Client(raise_request_exception=False).get("/test/boom/")
    flush()
    row = RequestRollup.objects.get(status_class="5xx")
    assert row.errors == 1 and row.count == 1


def test_processes_flushing_the_same_minute_add_up():
    minute = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
    one = [3, 1, 30.0, 6.0, 0] + [0] * len(BUCKET_FIELDS)
    one[5 + 2] = 3  # three requests in the <= 25 ms bucket
    _add(minute, "flags:list", "GET", "2xx", one)
    _add(minute, "flags:list", "GET", "2xx", one)
    row = RequestRollup.objects.get()
    assert (row.count, row.errors, row.duration_ms_sum, row.le_25) == (6, 2, 60.0, 6)


def test_percentiles_from_the_histogram():
    buckets = [0] * len(BUCKET_FIELDS)
    buckets[0] = 50  # <= 5 ms
    buckets[4] = 45  # 50..100 ms
    buckets[7] = 5  # 500..1000 ms
    assert percentile_from_buckets(buckets, 0.5) == 5.0
    assert 50 < percentile_from_buckets(buckets, 0.9) <= 100
    assert 500 < percentile_from_buckets(buckets, 0.99) <= 1000
    assert percentile_from_buckets([0] * len(BUCKET_FIELDS), 0.5) is None


def test_performance_dashboard_windows_overall_and_per_view(api_client):
    now = timezone.now().replace(second=0, microsecond=0)
    for minutes_ago, view, errors in [(2, "flags:list", 0), (30, "ofrep-evaluate-flags", 1), (600, "flags:list", 0)]:
        RequestRollup.objects.create(
            minute=now - timedelta(minutes=minutes_ago), view=view, method="GET", status_class="2xx",
            count=10, errors=errors, db_ms_sum=5.0, le_10=10,
        )  # fmt: skip
    response = api_client("monitoring:read").get("/api/deployment/performance/dashboard")
    assert response.status_code == 200
    windows = response.json()["windows"]
    assert windows["5m"]["overall"]["count"] == 10 and windows["1h"]["overall"]["count"] == 20
    assert windows["24h"]["overall"]["count"] == 30
    assert windows["1h"]["overall"]["error_rate"] == pytest.approx(1 / 20)
    assert set(windows["1h"]["views"]) == {"flags:list", "ofrep-evaluate-flags"}
    assert 5 < windows["5m"]["overall"]["p95_ms"] <= 10
    assert windows["5m"]["overall"]["db_ms_avg"] == 0.5


def test_request_figures_empty():
    figures = request_figures(timezone.now() - timedelta(minutes=5))
    assert figures.count == 0 and figures.p95_ms is None and figures.error_rate is None


def test_metrics_endpoint_needs_scope_and_speaks_prometheus(client, api_client):
    assert client.get("/metrics").status_code == 401
    reader = api_client("monitoring:read")
    reader.get("/api/deployment/features/u1")  # scope lacking: 403, still counted
    reader.get("/api/deployment/features/u2")
    flush()  # what the background flush does every REQUEST_METRICS_FLUSH_SECONDS
    response = reader.get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    text = response.content.decode()
    assert "# TYPE controlplane_http_requests_total counter" in text
    assert 'controlplane_http_requests_total{method="GET",status_class="4xx",view="api-features-for-user"}' in text
    count = re.search(r'controlplane_http_request_duration_seconds_count\{view="api-features-for-user"\} (\S+)', text)
    infinite = re.search(r'_duration_seconds_bucket\{le="\+Inf",view="api-features-for-user"\} (\S+)', text)
    assert float(count.group(1)) >= 2 and float(infinite.group(1)) == float(count.group(1))


@pytest.mark.django_db(transaction=True)
def test_metrics_sum_every_gunicorn_worker(gunicorn_server, make_token, tmp_path):
    import re
    import time
    import urllib.request

    # The token exists before the workers start and load their copy of the tokens (a token made later
    # reaches them within CONTROLPLANE_RELOAD_INTERVAL, which is not this test's subject).
    token = make_token("monitoring:read")
    base = gunicorn_server(
        workers=2, PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "prometheus"), REQUEST_METRICS_FLUSH_SECONDS="1"
    )
    for _ in range(40):
        urllib.request.urlopen(base + "/accounts/login/", timeout=5).read()
    request = urllib.request.Request(base + "/metrics", headers={"Authorization": f"Bearer {token}"})
    pattern = r'controlplane_http_requests_total\{method="GET",status_class="2xx",view="login"\} (\S+)'
    deadline = time.monotonic() + 15
    while True:  # each worker adds its sums at its next flush (every second here)
        text = urllib.request.urlopen(request, timeout=5).read().decode()
        match = re.search(pattern, text)
        if (match and float(match.group(1)) >= 40) or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert match and float(match.group(1)) == 40.0, text[:2000]
    histogram = re.search(r'controlplane_http_request_duration_seconds_count\{view="login"\} (\S+)', text)
    assert float(histogram.group(1)) == 40.0
