"""An operator reads the dashboard in a real browser: the score and tiles, acknowledging an alert in
place, a deployment's log arriving live, a flag flipped in another tab showing up at the next refresh.

Each test leaves a screenshot of the dashboard in ``test-artifacts/``."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import Page, expect

from alerting.models import Alert, AlertState
from alerting.services import rule_create
from controlplane.audit import Actor
from deployments.services import deployment_request
from flags.services import flag_create
from monitoring.models import HealthMetric
from tests.conftest import BASE_DIR
from tests.deployments.conftest import cmd, environment, worker  # noqa: F401 - fixtures used below

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
ARTIFACTS = BASE_DIR / "test-artifacts"
SYSTEM = Actor.system("tests")


def log_in(page: Page, url: str) -> None:
    page.goto(url)
    page.get_by_label("Username").fill("operator")
    page.get_by_label("Password").fill("correct horse battery staple")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("button", name="Log out")).to_be_visible()


def screenshot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / f"dashboard-{name}.png", full_page=True)


def mark_page(page: Page) -> None:
    """A marker that survives in-place updates and is gone after any reload or navigation."""
    page.evaluate("window.__notReloaded = true")


def not_reloaded(page: Page) -> bool:
    return page.evaluate("window.__notReloaded === true")


def seed_checks() -> None:
    now = timezone.now()
    HealthMetric.objects.bulk_create(
        [
            HealthMetric(time=now - timedelta(minutes=m), component="database", measurement="responseTime",
                         value=v, unit="ms", status="pass", output="ok")
            for m, v in ((30, 12), (20, 18), (10, 15))
        ]
        + [
            HealthMetric(time=now - timedelta(minutes=m), component="redis", measurement="responseTime",
                         value=v, unit="ms", status=s, output=o)
            for m, v, s, o in ((30, 3, "pass", "ok"), (20, 4, "pass", "ok"), (10, None, "fail", "connection refused"))
        ]
    )  # fmt: skip


def firing_alert() -> Alert:
    rule = rule_create(
        data={
            "name": "Redis down",
            "kind": "check_status",
            "component": "redis",
            "threshold": 1,
            "severity": "critical",
        },
        actor=SYSTEM,
    )
    return Alert.objects.create(
        rule=rule, dedup_key="redis:responseTime", component="redis", measurement="responseTime",
        state=AlertState.FIRING, fired_at=timezone.now(),
    )  # fmt: skip


def test_score_and_tiles_with_a_failing_check(live_server, page: Page, operator):
    seed_checks()
    log_in(page, live_server.url + "/")
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
    expect(page.locator("#health-score")).to_have_text("85")
    expect(page.locator(".deductions")).to_contain_text("−15 redis response time: fail (connection refused)")

    redis = page.locator("#tile-redis")
    expect(redis.locator(".pill")).to_have_text("✕ fail")  # the status in words and icon, not only in colour
    expect(redis.locator(".pill")).to_have_class("pill tone-bad")
    expect(redis.locator("svg.spark polyline")).to_have_attribute("points", "0.0,22.0 120.0,2.0")
    expect(page.locator("#tile-database .pill")).to_have_text("✓ pass")
    expect(page.locator("#tile-database .tile-value")).to_have_text("answered in 15 ms")
    # failing first, then the passing one, then the built-in checks that have not reported yet
    expect(page.locator(".tile .tile-head strong").first).to_have_text("redis")
    expect(page.locator(".tile .tile-head strong").nth(1)).to_have_text("Database")
    expect(page.locator("#tile-backups .pill")).to_have_text("… waiting")
    expect(page.locator("#chart-1h")).to_be_visible()
    expect(page.locator("#chart-24h .time-label").first).to_be_visible()  # the axes are labelled
    expect(page.locator("#chart-24h .value-label").first).to_have_text("0 ms")
    screenshot(page, "score-and-tiles")

    page.set_viewport_size({"width": 390, "height": 844})
    expect(page.locator("#tile-redis")).to_be_visible()
    # At phone width nothing sticks out sideways: no horizontal scrolling.
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    box = page.locator("#tile-redis").bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= 390
    screenshot(page, "phone-390px")


def test_acknowledging_an_alert_updates_the_panels_in_place(live_server, page: Page, operator):
    seed_checks()
    alert = firing_alert()
    log_in(page, live_server.url + "/")
    expect(page.locator("#health-score")).to_have_text("65")
    item = page.locator(f"#alert-{alert.pk}")
    expect(item.locator(".pill")).to_have_text("✕ firing")
    expect(item).to_contain_text("critical")
    mark_page(page)

    item.get_by_role("button", name="Acknowledge Redis down").click()
    expect(item).to_contain_text("acknowledged")
    expect(item.get_by_role("button")).to_have_count(0)
    expect(page.locator("#health-score")).to_have_text("85")  # the acknowledged alert no longer counts
    expect(page.get_by_text("Alert Redis down acknowledged.")).to_be_visible()
    assert not_reloaded(page), "htmx swapped the panels; the page did not reload"
    alert.refresh_from_db()
    assert alert.acknowledged_by == operator
    screenshot(page, "alert-acknowledged")


def test_a_deployment_log_arrives_live(live_server, page: Page, operator, environment, worker):  # noqa: F811
    environment(
        [cmd("slow", "import time\nfor i in range(10):\n    print('line', i, flush=True)\n    time.sleep(0.5)")],
        name="web",
    )
    worker()
    log_in(page, live_server.url + "/deployments/")
    deployment = deployment_request(environment="web", version="v7", actor=Actor.for_user(operator))
    page.goto(live_server.url + f"/deployments/{deployment.pk}/")
    expect(page.get_by_role("heading", name=f"Deployment #{deployment.pk}: web v7")).to_be_visible()
    mark_page(page)

    output = page.locator("pre.output")
    expect(output).to_contain_text("line 0", timeout=30_000)
    # Seen while it runs (status and output read at one moment): the first lines are there, the last not yet.
    status, text = page.evaluate(
        "[document.querySelector('#status .pill').dataset.status, document.querySelector('pre.output').textContent]"
    )
    assert status == "running" and "line 9" not in text, text
    screenshot(page, "deployment-running")
    expect(page.locator("#status .pill")).to_have_text("✓ succeeded", timeout=30_000)
    expect(output).to_contain_text("line 9")
    expect(page.locator("#log")).to_contain_text("succeeded")
    assert not_reloaded(page), "the live part refreshed in place; the page did not reload"

    page.get_by_role("navigation", name="Main").get_by_role("link", name="Dashboard").click()
    expect(page.locator(f"#dash-deployment-{deployment.pk}")).to_contain_text("web v7")
    expect(page.locator(f"#dash-deployment-{deployment.pk} .pill")).to_have_text("✓ succeeded")
    screenshot(page, "deployment-succeeded")


def test_a_flag_flipped_in_another_tab_shows_at_the_next_refresh(live_server, page: Page, operator):
    flag_create(data={"name": "new_checkout", "enabled": True, "rollout_percent": 100}, actor=SYSTEM)
    flag_create(data={"name": "dark_mode", "enabled": False, "rollout_percent": 100}, actor=SYSTEM)
    log_in(page, live_server.url + "/")
    summary = page.locator("#flags-summary")
    expect(summary).to_have_text("2 flags: 1 on, 0 partial, 1 off")
    mark_page(page)

    flags = page.context.new_page()
    flags.goto(live_server.url + "/flags/")
    flags.get_by_role("button", name="Enable dark_mode in production").click()
    flags.get_by_role("button", name="Turn on dark_mode in production").click()  # production asks first
    expect(flags.get_by_text("dark_mode is now enabled in production.")).to_be_visible()
    flags.close()

    # The dashboard's panels refresh every 10 s without a reload.
    expect(summary).to_have_text("2 flags: 2 on, 0 partial, 0 off", timeout=15_000)
    expect(page.locator("#flags-title + p + ul")).to_contain_text("operator: flag.toggle dark_mode")
    assert not_reloaded(page)
    screenshot(page, "flag-flipped")


def seed_requests() -> None:
    from monitoring.models import RequestRollup

    now = timezone.now().replace(second=0, microsecond=0)
    RequestRollup.objects.bulk_create(
        RequestRollup(
            minute=now - timedelta(minutes=m), view="flags:list", method="GET", status_class=status_class,
            count=count, errors=count if status_class == "5xx" else 0, le_25=count // 2, le_100=count - count // 2,
        )
        for m in range(0, 50, 2)
        for status_class, count in (("2xx", 40 + m), ("5xx", m % 7))
    )  # fmt: skip


def test_the_dashboard_and_a_deployment_at_desktop_and_phone_width(live_server, page: Page, operator, environment):  # noqa: F811
    from deployments.models import Deployment, DeploymentStatus, LogLevel, StepRun, StepStatus
    from deployments.services import log

    seed_checks()
    seed_requests()
    environment([cmd("migrate", "print(1)"), cmd("restart", "print(2)")], name="web")
    deployment = deployment_request(environment="web", version="v8", actor=SYSTEM)
    Deployment.objects.filter(pk=deployment.pk).update(status=DeploymentStatus.ROLLED_BACK)
    StepRun.objects.create(deployment=deployment, index=0, name="migrate", kind="command", status=StepStatus.SUCCEEDED)
    StepRun.objects.create(
        deployment=deployment, index=1, name="restart", kind="command", status=StepStatus.FAILED, error="exit 1"
    )
    StepRun.objects.create(
        deployment=deployment, index=0, phase="rollback", name="undo migrate", kind="command", status="succeeded"
    )
    log(deployment, "restart exited 1", level=LogLevel.ERROR, step="restart")
    log(deployment, "rolling back 1 completed step", level=LogLevel.WARNING)

    page.set_viewport_size({"width": 1440, "height": 900})
    log_in(page, live_server.url + "/")
    expect(page.locator("#chart-1h .bar").first).to_be_visible()
    expect(page.locator(f"#dash-deployment-{deployment.pk} .pill")).to_have_text("↶ rolled back")
    title = page.locator("#chart-1h svg.requests .slot title").first.text_content()
    assert "requests" in title and "error rate" in title, title
    screenshot(page, "desktop-1440px")
    page.goto(live_server.url + f"/deployments/{deployment.pk}/")
    expect(page.locator("#status .pill")).to_have_class("pill tone-warn")
    expect(page.locator("#log .level-error")).to_contain_text("restart exited 1")
    assert page.locator("#log .level-error").evaluate("e => getComputedStyle(e).color") != page.locator(
        "#log .level-info"
    ).first.evaluate("e => getComputedStyle(e).color")
    screenshot(page, "deployment-1440px")

    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(live_server.url + "/")
    expect(page.locator("#chart-24h")).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    screenshot(page, "dashboard-390px")
    page.goto(live_server.url + f"/deployments/{deployment.pk}/")
    screenshot(page, "deployment-390px")
