"""Every page an operator opens, at desktop (1440 px) and phone (390 px) width, holding real content: it
loads without a console error, an uncaught script error, a failed request or an answer of 400 or more
from the control plane, and leaves a full-page screenshot ``test-artifacts/<page>-<width>.png``.

The database is emptied after each test (the live server needs committed rows), so each case seeds its
data and logs in with a session cookie made by Django's test client: the login form itself is a page
of the sweep, and tests/browser/test_login.py drives it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from urllib.parse import urlsplit

import pytest
from django.conf import settings
from django.test import Client
from django.utils import timezone
from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page, Request, Response, expect

from backups.models import BackupTarget
from backups.services import backup_create, backup_verify, target_create
from controlplane.audit import Actor
from controlplane.models import Environment as ControlEnvironment
from deployments.models import RecoveryPlan
from deployments.services import deployment_request, environment_save, pipeline_save
from flags.models import Flag, FlagUsage, SdkInstance
from flags.services import flag_create
from tests.backups.conftest import make_sqlite, point_backups_at
from tests.browser.test_dashboard import ARTIFACTS
from tests.browser.test_layout import buttons_off_screen
from tests.deployments.conftest import cmd, echo
from tests.monitoring.slo_data import DAY, HOUR, Traffic, make_service, make_slo

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
SYSTEM = Actor.system("tests")
HEIGHTS = {1440: 900, 390: 844}

# page name -> (path, the text of its heading), both with {deployment} and {target} filled in
PAGES = {
    "dashboard": ("/", "Dashboard"),
    "flags": ("/flags/", "Flags"),
    "flag": ("/flags/new_checkout/", "new_checkout"),
    "stale-flags": ("/flags/usage/stale/", "Stale flags"),
    "sdk-instances": ("/flags/usage/sdks/", "SDK instances"),
    "deployments": ("/deployments/", "Deployments"),
    "deployment": ("/deployments/{deployment}/", "Deployment #{deployment}: web v2"),
    "recovery-plan": ("/deployments/recovery/{plan}/plan", "Run recovery plan {plan} on web?"),
    "backups": ("/backups/", "Backups"),
    "backup-target": ("/backups/{target}/", "Backups: {target}"),
    "backup-target-pitr": ("/backups/{pitr_target}/", "Backups: {pitr_target}"),
    "slos": ("/slo/", "SLOs"),
    "slo": ("/slo/{service}/availability/", "SLO {service} / availability"),
    "login": ("/accounts/login/", "Log in"),
    "admin": ("/admin/", "Operations"),
}
LOGGED_OUT = {"login"}
# Tables known to run past a phone's width (they are not marked .fit yet). The sweep fails when one more
# is cut off, and also when one of these fits: then its entry goes.
KNOWN_CUT_OFF: dict[tuple[str, int], list[str]] = {}


@dataclass
class Problems:
    """What went wrong while a page loaded, in the words a developer would search for."""

    origin: str
    found: list[str] = field(default_factory=list)

    def console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.found.append(f"console error: {message.text} ({message.location.get('url', '')})")

    def page_error(self, error: Exception) -> None:
        self.found.append(f"uncaught script error: {error}")

    def request_failed(self, request: Request) -> None:
        self.found.append(f"request failed: {request.method} {request.url}: {request.failure}")

    def response(self, response: Response) -> None:
        parts = urlsplit(response.url)
        if response.status >= 400 and f"{parts.scheme}://{parts.netloc}" == self.origin:
            self.found.append(f"{response.status} for {response.request.method} {response.url}")

    def watch(self, page: Page) -> None:
        page.on("console", self.console)
        page.on("pageerror", self.page_error)
        page.on("requestfailed", self.request_failed)
        page.on("response", self.response)

    def stop_watching(self, page: Page) -> None:
        """Before the page closes: a poll cut off by the close is not a failure of the page."""
        page.remove_listener("console", self.console)
        page.remove_listener("pageerror", self.page_error)
        page.remove_listener("requestfailed", self.request_failed)
        page.remove_listener("response", self.response)


def tables_cut_off(page: Page) -> list[str]:
    """The tables wider than their box (a narrow screen lets a table not marked .fit scroll sideways)."""
    return page.evaluate(
        """() => [...document.querySelectorAll('table')]
            .filter(t => t.offsetParent !== null && t.scrollWidth > t.clientWidth + 1)
            .map(t => t.className || t.id || 'table')"""
    )


@pytest.fixture
def site(operator, settings, tmp_path, monkeypatch) -> dict[str, object]:
    """A flag, an environment with a succeeded and a rolled-back deployment (step runs, rollback, log
    lines), a backup target with a verified backup: all made through the services, the deployments run
    in this process."""
    from controlplane.celery import app as celery_app

    flag_create(data={"name": "new_checkout", "enabled": True, "rollout_percent": 25, "owner": "growth"}, actor=SYSTEM)
    flag_create(data={"name": "dark_mode", "enabled": False, "rollout_percent": 100}, actor=SYSTEM)
    # Usage on the flag's page, a stale flag (made 40 days ago, never evaluated) and an SDK that registered.
    production = ControlEnvironment.objects.ensure("production")
    hour = timezone.now().replace(minute=0, second=0, microsecond=0)
    FlagUsage.objects.create(flag="new_checkout", environment=production, hour=hour, yes=40, no=120)
    Flag.objects.filter(name="dark_mode").update(created=timezone.now() - 40 * DAY)
    SdkInstance.objects.create(
        environment=production,
        app_name="wingmanmatch-backend-with-a-long-name",
        instance_id="wingmanmatch-backend-7d9f8c6b5-x2k4q",
        sdk_version="unleash-python-sdk:6.9.1",
    )

    from alerting.models import AlertRule

    AlertRule.objects.create(name="web down", kind="check_status", threshold=3, component="web")
    verify = {
        "name": "verify",
        "kind": "analysis",
        "duration": 1,
        "interval": 0.5,
        "conditions": [{"alerts": ["web down"]}],
    }
    steps = [
        echo("migrate", "migrated to {version}", rollback=echo("undo migrate", "migrated back")),
        verify,  # its charts are on the deployment's page
        cmd("restart", "import sys\nprint('restarting', sys.argv[1])\nsys.exit(sys.argv[1] == 'v2')"),
    ]
    pipeline = pipeline_save(name="web-pipeline", steps=steps, actor=SYSTEM)
    web = environment_save(name="web", pipeline=pipeline, actor=SYSTEM)
    RecoveryPlan.objects.create(failure_type="restart_web", environment=web, steps=steps[1:], runbook="Restart web.")
    before = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = True  # each deployment runs when its request commits
    try:
        deployment_request(environment="web", version="v1", actor=SYSTEM)
        deployment = deployment_request(environment="web", version="v2", actor=SYSTEM)
    finally:
        celery_app.conf.task_always_eager = before
    deployment.refresh_from_db()
    assert deployment.status == "rolled_back", deployment.status

    point_backups_at(settings, tmp_path / "backups", tmp_path / "partial")
    settings.BACKUP_SCRATCH_DATABASE_URL = ""
    source = make_sqlite(tmp_path / "source" / "app.sqlite3")
    monkeypatch.setenv("BROWSER_SWEEP_SOURCE_URL", f"sqlite:///{source}")
    target = target_create(data={"name": "orders", "url_env": "BROWSER_SWEEP_SOURCE_URL"}, actor=SYSTEM)
    backup = backup_create(target=target, actor=SYSTEM)
    assert backup.status == "succeeded", backup.error
    assert backup_verify(backup=backup, actor=SYSTEM).status == "passed"
    # A recovery plan drilled once, and another whose drill is under way with its progress.
    from backups.drills import drill_create
    from backups.models import Drill

    for name in ("orders_failure", "orders_data_loss"):
        RecoveryPlan.objects.create(
            failure_type=name,
            environment=web,
            steps=[echo("fix", "fixed")],
            drill_target=target,
            smoke_queries=["SELECT count(*) FROM customers"],
        )
    assert drill_create(plan_name="orders_failure", actor=SYSTEM).status == "passed"
    progress = {"phase": "restore", "done": None, "total": None, "unit": "", "percent": None, "elapsedMs": 4200,
                "leftMs": 9000}  # fmt: skip
    Drill.objects.create(plan="orders_data_loss", target=target, backup=backup, progress=progress)
    # A pgBackRest target with the window pgbackrest info would have given: both backups pages show it.
    monkeypatch.setenv("BROWSER_SWEEP_PITR_URL", "postgres://postgres@127.0.0.1:5432/shop")
    pitr = target_create(
        data={
            "name": "shop-pitr",
            "url_env": "BROWSER_SWEEP_PITR_URL",
            "kind": "pgbackrest",
            "pgbackrest_stanza": "shop",
        },
        actor=SYSTEM,
    )
    BackupTarget.objects.filter(pk=pitr.pk).update(
        pitr_window_start=timezone.now() - 3 * DAY, pitr_window_end=timezone.now() - timedelta(seconds=40)
    )
    # A set of it as pgbackrest backup records one, with a passed point-in-time verification: its row has no
    # file, no copies and no storage (the set lives in pgBackRest's repository), which the page must carry.
    label = "20261202-101500F"
    pitr_set = pitr.backups.create(
        engine="pgbackrest",
        status="succeeded",
        finished_at=timezone.now(),
        duration_ms=8200,
        size_bytes=24_000_000,
        manifest={"label": label, "type": "full"},
        verification="passed",
    )
    pitr_set.verifications.create(
        status="passed",
        finished_at=timezone.now(),
        duration_ms=31000,
        restore_ms=12000,
        target_time=timezone.now() - DAY,
        checks=[{"name": "restore", "status": "pass", "detail": "", "ms": 12000}],
        scratch_dropped=True,
    )
    service = make_service()  # an availability and a latency SLO, with a week of traffic and a burn now
    make_slo(service, name="availability")
    make_slo(service, name="fast", kind="latency", target_percent=99, threshold_ms=500, window_days=7)
    now = timezone.now().replace(second=0, microsecond=0)
    Traffic().add(now - 7 * DAY, now - HOUR, errors=0.0002).add(now - HOUR, now, errors=0.02).save(service, now + HOUR)
    return {
        "deployment": deployment.pk,
        "target": target.name,
        "service": service.name,
        "plan": "restart_web",
        "pitr_target": pitr.name,
    }


@pytest.fixture
def sweep_context(browser: Browser, live_server, operator, request) -> Iterator[BrowserContext]:
    """A context at the case's width: logged in as the operator, or not at all for the login page."""
    name, width = request.node.callspec.params["name"], request.node.callspec.params["width"]
    ctx = browser.new_context(viewport={"width": width, "height": HEIGHTS[width]})
    if name not in LOGGED_OUT:
        client = Client()
        client.force_login(operator)
        cookie = client.cookies[settings.SESSION_COOKIE_NAME]
        ctx.add_cookies([{"name": cookie.key, "value": cookie.value, "url": live_server.url}])
    yield ctx
    ctx.close()


@pytest.mark.parametrize("width", [1440, 390])
@pytest.mark.parametrize("name", list(PAGES))
def test_page_loads_cleanly(live_server, sweep_context: BrowserContext, site, name: str, width: int):
    path, heading = (text.format(**site) for text in PAGES[name])
    page = sweep_context.new_page()
    problems = Problems(origin=live_server.url)
    problems.watch(page)
    page.goto(live_server.url + path, wait_until="networkidle")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / f"{name}-{width}.png", full_page=True)
    problems.stop_watching(page)

    assert urlsplit(page.url).path == path, f"{path} led to {page.url}"
    expect(page.get_by_role("heading", level=1)).to_have_text(heading)
    assert problems.found == [], "\n".join(problems.found)
    # Nothing runs past the window's edge: no sideways scrolling of the page or of a table in it (a
    # column cut off), every button of a list on screen.
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), "the page scrolls sideways"
    assert tables_cut_off(page) == KNOWN_CUT_OFF.get((name, width), []), "a table is cut off, or one now fits"
    assert buttons_off_screen(page) == []
