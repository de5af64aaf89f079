"""The SLO pages: the list of every SLO with its budget, burn rates and alerts, and one SLO's burn chart,
with and without data; reachable from the navigation, for staff who read alerts."""

from __future__ import annotations

import re
from datetime import timedelta
from html import unescape

import pytest
from django.utils import timezone

from tests.monitoring.slo_data import DAY, HOUR, Traffic, make_service, make_slo

pytestmark = pytest.mark.django_db


def _now():
    """Whole minutes, as rollups are; the data is saved as if an hour later, with the current hour's row
    written too, so that a page opened across the hour reads the same counts."""
    return timezone.now().replace(second=0, microsecond=0)


def _row(html: str, row_id: str) -> str:
    found = re.search(rf'<tr id="{re.escape(row_id)}">(.*?)</tr>', html, re.S)
    assert found, row_id
    return found.group(1)


def _words(html: str) -> str:
    return re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", " ", html)))


def test_the_list_without_slos_says_how_to_add_one(viewer_client):
    response = viewer_client.get("/slo/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "<h1>SLOs</h1>" in html and "No SLOs yet" in html
    assert re.search(r'<a href="/slo/" aria-current="page">SLOs</a>', html)
    assert not re.search(r'<a href="/" aria-current="page">Dashboard</a>', html)


def test_the_list_shows_budget_burn_rates_and_alerts(viewer_client):
    now = _now()
    burning = make_service("wingmanmatch-backend")
    make_slo(burning, name="availability")
    make_slo(burning, name="fast", kind="latency", target_percent=99, threshold_ms=500, window_days=7)
    Traffic().add(now - 3 * DAY, now - HOUR).add(now - HOUR, now, errors=0.03).save(burning, now + HOUR)
    make_slo(make_service("idle"), name="availability", alerting=False)
    make_slo(make_service("upstream", kind="prometheus"), name="availability")

    html = viewer_client.get("/slo/").content.decode()
    row = _words(_row(html, "slo-wingmanmatch-backend-availability"))
    assert "99.9 % of requests succeed" in row and "30 days" in row
    assert "paging" in row and "quiet" in row  # the page alert fires; the ticket one does not
    assert re.search(r"Burn 1 h", html) and "30.0x" in row  # 3 % errors against a 0.1 % budget
    latency = _words(_row(html, "slo-wingmanmatch-backend-fast"))
    assert "99 % of requests within 500 ms" in latency and "100.0 % left" in latency
    idle = _words(_row(html, "slo-idle-availability"))
    assert "no data" in idle and "(no alerts)" in idle
    upstream = _words(_row(html, "slo-upstream-availability"))  # its server (127.0.0.1:9) refuses
    assert "no data" in upstream and "http://127.0.0.1:9: connection refused" in upstream
    assert 'href="/slo/wingmanmatch-backend/availability/"' in html


def test_one_slo_with_its_burn_chart(viewer_client):
    now = _now()
    service = make_service()
    make_slo(service, window_days=7)
    Traffic().add(now - 8 * DAY, now, errors=0.0005).save(service, now + HOUR)

    response = viewer_client.get(f"/slo/{service.name}/availability/")
    assert response.status_code == 200
    html = response.content.decode()
    assert f"<h1>SLO {service.name} / availability</h1>" in html
    words = _words(html)
    assert "50.0 % left" in words and "over a rolling 7 days" in words
    assert "0.1 % of requests may fail: as much as 10.1 minutes of complete outage" in words  # of 7 days
    assert "page: over 14.4x for 1 h and 5 min" in words
    chart = re.search(r'<svg class="budget".*?</svg>', html, re.S).group(0)
    [line] = re.findall(r'<polyline class="budget-line" points="([^"]+)"', chart)
    assert len(line.split()) == 7 * 24  # a point an hour
    assert chart.count("<title>") == 7 * 24 and "of the budget left" in chart
    assert [label for label in re.findall(r'text-anchor="end"[^>]*>([^<]+)</text>', chart)] == ["100 %", "50 %", "0 %"]
    assert "no requests counted yet" not in chart
    assert 'aria-current="page">SLOs</a>' in html


def test_one_slo_without_data(viewer_client):
    make_slo(make_service(), name="availability")
    html = viewer_client.get("/slo/wingmanmatch-backend/availability/").content.decode()
    assert "no requests counted yet" in html and "no data" in html
    assert "<polyline" not in html


def test_an_overspent_budget_extends_the_axis_below_zero(viewer_client):
    now = _now()
    service = make_service()
    make_slo(service, window_days=1)
    Traffic().add(now - 2 * DAY, now, errors=0.0015).save(service, now + HOUR)
    html = viewer_client.get(f"/slo/{service.name}/availability/").content.decode()
    assert "exhausted" in html and "The budget is spent." in html
    chart = re.search(r'<svg class="budget".*?</svg>', html, re.S).group(0)
    assert re.findall(r'text-anchor="end"[^>]*>([^<]+)</text>', chart) == ["100 %", "50 %", "0 %", "-50 %"]


def test_a_prometheus_slo_whose_server_refuses_shows_the_error(viewer_client):
    make_slo(make_service("upstream", kind="prometheus"))
    html = viewer_client.get("/slo/upstream/availability/").content.decode()
    words = _words(html)
    assert "No counts: http://127.0.0.1:9: connection refused" in words
    assert "Page – no data" in words and "Ticket – no data" in words
    assert "no requests counted yet" in html and "<polyline" not in html


def test_an_unknown_slo_is_404(viewer_client):
    make_service()
    assert viewer_client.get("/slo/wingmanmatch-backend/nothing/").status_code == 404
    assert viewer_client.get("/slo/nobody/availability/").status_code == 404


def test_the_pages_need_a_login(client):
    response = client.get("/slo/")
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")


def test_the_exhaustion_estimate(viewer_client):
    now = _now()
    service = make_service()
    make_slo(service)  # 99.9 % over 30 days
    Traffic().add(now - 3 * DAY, now - HOUR).add(now - HOUR, now, errors=0.01).save(service, now + HOUR)
    html = _words(viewer_client.get(f"/slo/{service.name}/availability/").content.decode())
    # 10x for the last hour: what is left (most of it) lasts a tenth of 30 days, about 3 days.
    found = re.search(r"At the last hour's burn rate \(10.00x\), the budget lasts (\d+) days more", html)
    assert found and int(found.group(1)) == 3
    assert timedelta(days=30) / 10 == timedelta(days=3)
