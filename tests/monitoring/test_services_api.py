"""GET /api/deployment/services and /services/<name>: the product's services and their signals."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from monitoring.models import MetricSource
from tests.monitoring.service_data import SLOW, add_minutes, make_service, this_minute

pytestmark = pytest.mark.django_db

SIGNALS = {"request_rate", "error_ratio", "p50", "p95", "p99", "up"}


@pytest.fixture
def reader(api_client):
    return api_client("monitoring:read")


def test_list_needs_a_token_with_monitoring_read(client, api_client):
    missing = client.get("/api/deployment/services")
    assert missing.status_code == 401
    assert missing.json()["error"] == "unauthorized"
    assert missing["WWW-Authenticate"].startswith("Bearer")
    wrong = api_client("flags:read").get("/api/deployment/services")
    assert wrong.status_code == 403
    assert wrong.json() == {"error": "forbidden", "detail": "the token lacks the scope monitoring:read",
                            "scope": "monitoring:read"}  # fmt: skip


def test_detail_needs_a_token_with_monitoring_read(client, api_client):
    make_service()
    assert client.get("/api/deployment/services/wingmanmatch-backend").status_code == 401
    assert api_client("deploy").get("/api/deployment/services/wingmanmatch-backend").status_code == 403


def test_list_without_services_is_empty(reader):
    body = reader.get("/api/deployment/services").json()
    assert body["services"] == [] and body["window"] == "5m"


def test_list_shows_each_service_with_its_current_signals_and_sources(reader):
    healthy = make_service("wingmanmatch-backend")
    add_minutes(healthy, minutes=4, requests=100, errors=2)
    failing = make_service("wingmanmatch-worker")
    MetricSource.objects.filter(service=failing).update(up=False, last_error="connection refused")
    add_minutes(failing, minutes=4, requests=None, scrapes=4, failed=4)

    body = reader.get("/api/deployment/services").json()
    by_name = {service["name"]: service for service in body["services"]}
    assert list(by_name) == ["wingmanmatch-backend", "wingmanmatch-worker"]

    backend = by_name["wingmanmatch-backend"]
    assert set(backend["signals"]) == SIGNALS
    assert backend["up"] == 1.0
    assert backend["signals"]["error_ratio"]["value"] == pytest.approx(0.02)
    assert backend["signals"]["p95"] == {"signal": "p95", "unit": "s", "window_seconds": 300, "value": 1.5,
                                         "requests": 400.0, "error": ""}  # fmt: skip
    assert backend["signals"]["request_rate"]["value"] == pytest.approx(400 / 300)
    [source] = backend["sources"]
    assert source["kind"] == "scrape" and source["last_error"] == "" and source["enabled"] is True

    worker = by_name["wingmanmatch-worker"]
    assert worker["up"] == 0.0
    assert worker["signals"]["p95"]["value"] is None
    assert worker["signals"]["p95"]["error"] == "connection refused"  # why there is no figure
    assert worker["sources"][0]["up"] is False
    assert worker["sources"][0]["last_error"] == "connection refused"


def test_detail_reads_the_window_asked_for(reader):
    service = make_service()
    add_minutes(service, minutes=4, buckets=SLOW)  # the last 5 minutes: slow
    add_minutes(service, minutes=50, end=this_minute() - timedelta(minutes=5))  # the hour before: fast

    five = reader.get("/api/deployment/services/wingmanmatch-backend").json()
    assert five["window"] == "5m" and five["name"] == "wingmanmatch-backend"
    assert five["signals"]["p95"]["value"] == pytest.approx(4.6875)
    assert five["signals"]["p95"]["window_seconds"] == 300

    hour = reader.get("/api/deployment/services/wingmanmatch-backend?window=1h").json()
    assert hour["window"] == "1h"
    assert hour["signals"]["p95"]["window_seconds"] == 3600
    assert hour["signals"]["p95"]["requests"] == 5400.0
    assert 1.5 < hour["signals"]["p95"]["value"] < 4.6875


@pytest.mark.parametrize("window", ["1m", "5m", "15m", "1h", "6h", "24h", "7d", "28d"])
def test_detail_accepts_the_usual_windows(reader, window):
    make_service()
    response = reader.get(f"/api/deployment/services/wingmanmatch-backend?window={window}")
    assert response.status_code == 200, response.content
    assert response.json()["window"] == window


@pytest.mark.parametrize("window", ["", "5", "5s", "0m", "-5m", "29d", "1w", "1.5h", "5m5m", "fivem"])
def test_a_bad_window_is_400_naming_the_field(reader, window):
    make_service()
    response = reader.get("/api/deployment/services/wingmanmatch-backend", {"window": window})
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "invalid" and body["field"] == "window"
    assert "1m to 28d" in body["detail"]


def test_an_unknown_service_is_404(reader):
    response = reader.get("/api/deployment/services/no-such-service")
    assert response.status_code == 404
    assert response.json() == {"error": "not_found", "detail": "no service named no-such-service"}


def test_a_long_window_reads_hours_and_a_service_without_data_reads_none(reader):
    make_service()
    body = reader.get("/api/deployment/services/wingmanmatch-backend?window=7d").json()
    assert body["signals"]["p95"]["value"] is None and body["up"] is None
    assert body["generated_at"] <= timezone.now().isoformat()


def test_the_operations_are_in_the_openapi_document(reader):
    paths = reader.get("/api/deployment/openapi.json").json()["paths"]
    assert "get" in paths["/api/deployment/services"]
    detail = paths["/api/deployment/services/{name}"]["get"]
    assert {"200", "400", "401", "403", "404"} <= set(detail["responses"])
    assert any(parameter["name"] == "window" for parameter in detail["parameters"])


def test_the_list_reads_do_not_grow_with_the_services(reader):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    def count() -> int:
        with CaptureQueriesContext(connection) as queries:
            assert reader.get("/api/deployment/services").status_code == 200
        return len(queries)

    add_minutes(make_service("svc-0"), minutes=4)
    count()  # the token's first use is written once
    with_one = count()
    for i in range(1, 8):
        add_minutes(make_service(f"svc-{i}"), minutes=4)
    assert count() == with_one
