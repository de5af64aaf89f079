"""The dashboard's Services panel in the browser: what an operator sees of the product first, its row kept
up to date by the in-place refresh, and at phone width nothing sticking out sideways.

Leaves screenshots in ``test-artifacts/``."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import Page, expect

from monitoring.models import JobMonitor, MetricSource, Service, ServiceMinute
from tests.browser.test_dashboard import log_in, mark_page, not_reloaded, screenshot

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
BOUNDS = ("0.05", "0.1", "0.25", "0.5", "1.0", "2.5", "5.0", "+Inf")


def seed_service(name: str, *, errors: float = 1.0) -> Service:
    service = Service.objects.create(name=name, description="the product's API")
    MetricSource.objects.create(service=service, urls="http://127.0.0.1:9/metrics")
    this_minute = timezone.now().replace(second=0, microsecond=0)
    gap = (20, 21)  # two minutes whose scrapes failed
    ServiceMinute.objects.bulk_create(
        ServiceMinute(
            service=service,
            minute=this_minute - timedelta(minutes=ago),
            route="",
            requests=None if ago in gap else 600.0,
            errors=None if ago in gap else errors,
            buckets={} if ago in gap else dict(zip(BOUNDS, [60, 300 + ago, *[600] * 6], strict=True)),
            scrapes=4,
            failed=4 if ago in gap else 0,
        )
        for ago in range(1, 61)
    )  # fmt: skip
    return service


def test_the_services_panel_comes_first_with_a_row_per_service(live_server, page: Page, operator):
    seed_service("wingmanmatch-backend")
    JobMonitor.objects.create(name="weekly-digest", state="up", last_ping=timezone.now() - timedelta(minutes=3))
    page.set_viewport_size({"width": 1440, "height": 900})
    log_in(page, live_server.url + "/")

    panel = page.locator("section.services")
    expect(panel.get_by_role("heading", name="Services")).to_be_visible()
    first = page.locator("#panels section.panel").first
    expect(first.get_by_role("heading", level=2)).to_have_text("Services")  # before the score and the charts
    row = page.locator("#service-wingmanmatch-backend")
    expect(row.locator(".pill")).to_have_text("✓ up")
    expect(row.locator("td.errors")).to_have_text("0.167 %")
    expect(row.locator("td.p95 svg.spark path")).to_be_visible()
    assert row.locator("td.p95 svg.spark path").get_attribute("d").count("M") == 2  # the 2-minute gap breaks it
    expect(row.locator("td.uptime span[data-window='24h']")).to_have_attribute(
        "title", re.compile(r"(\d+ of \d+ succeeded|nothing measured) in the last 24 h")
    )
    expect(row.locator("td.slo")).to_contain_text("no SLO")
    expect(page.locator("#job-weekly-digest .pill")).to_have_text("✓ up")
    expect(page.locator("#job-weekly-digest")).to_contain_text("last ping 3")
    expect(page.get_by_role("heading", name="Control plane requests")).to_be_visible()
    screenshot(page, "services-1440px")

    # A second service appears at the next in-place refresh, without a reload.
    mark_page(page)
    seed_service("wingmanmatch-worker", errors=60.0)
    erring = page.locator("#service-wingmanmatch-worker")
    expect(erring).to_be_visible(timeout=15_000)
    expect(erring.locator("td.errors")).to_have_text("10 %")
    expect(erring.locator("td.errors")).to_have_class("errors over")
    expect(page.locator(".deductions")).to_contain_text("service wingmanmatch-worker error ratio 10 % (over 1 %)")
    assert not_reloaded(page)

    page.set_viewport_size({"width": 390, "height": 844})
    expect(row).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    screenshot(page, "services-390px")


def test_no_service_says_how_to_add_one(live_server, page: Page, operator):
    log_in(page, live_server.url + "/")
    expect(page.locator("#services-empty")).to_contain_text("Add a service in admin")
