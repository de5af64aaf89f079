"""A recovery plan's page, where an alert's "run <plan>" leads: the dry run first (what each step would do,
nothing queued), then a confirmed POST runs it; login, the run permission and CSRF guard it."""

from __future__ import annotations

import re

import pytest
from django.test import Client

from controlplane.audit import Actor
from controlplane.models import AuditEvent
from deployments.models import Deployment, DeploymentType, RecoveryPlan
from tests.deployments.conftest import echo

pytestmark = pytest.mark.django_db
SYSTEM = Actor.system("tests")
STEPS = [
    echo("restart", "restarting", rollback=echo("undo", "undoing")),
    {"name": "settle", "kind": "wait", "seconds": 2},
]
PAGE = "/deployments/recovery/restart_backend/plan"


@pytest.fixture
def plan(environment):
    env = environment(STEPS, name="runbook")
    return RecoveryPlan.objects.create(failure_type="restart_backend", environment=env, steps=STEPS, runbook="Call Bo.")


def recoveries() -> list[Deployment]:
    return list(Deployment.objects.filter(type=DeploymentType.RECOVERY))


def test_the_page_shows_the_dry_run_and_asks_before_running(plan, operator_client):
    response = operator_client.get(PAGE)
    assert response.status_code == 200
    html = response.content.decode()
    assert "Run recovery plan restart_backend on runbook?" in html and "Call Bo." in html
    dry_run = re.search(r'<ol id="plan-dry-run">(.*?)</ol>', html, re.S).group(1)
    items = re.findall(r"<li><strong>(.*?)</strong>: (.*?)</li>", dry_run)
    assert [name for name, _ in items] == ["restart", "settle"]
    assert items[0][1].startswith("would run [") and "restarting" in items[0][1]
    assert "; on a later failure would run [" in items[0][1] and "undoing" in items[0][1]
    assert items[1][1] == "would wait 2 s"
    form = re.search(
        r'<form method="post" action="/deployments/recovery/restart_backend"[^>]*>(.*?)</form>', html, re.S
    )
    assert 'name="csrfmiddlewaretoken"' in form.group(1)
    assert '<input type="hidden" name="confirm" value="yes">' in form.group(1)
    assert recoveries() == [] and not AuditEvent.objects.filter(action__startswith="deployment.").exists()


def test_the_confirmed_post_with_its_csrf_token_runs_the_plan_and_audits_it(plan, operator):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(operator)
    browser.get(PAGE)
    token = browser.cookies["csrftoken"].value

    refused = browser.post("/deployments/recovery/restart_backend", {"confirm": "yes"})  # no token
    assert refused.status_code == 403 and recoveries() == []

    response = browser.post("/deployments/recovery/restart_backend", {"confirm": "yes", "csrfmiddlewaretoken": token})
    [run] = recoveries()
    assert response.status_code == 302 and response["Location"] == f"/deployments/{run.pk}/"
    assert (run.recovery_type, run.dry_run, run.requested_by) == ("restart_backend", False, "operator")
    assert AuditEvent.objects.get(action="deployment.recovery", object_id=str(run.pk)).actor_label == "operator"


def test_the_page_s_dry_run_button_queues_a_dry_run_only(plan, operator_client):
    response = operator_client.post("/deployments/recovery/restart_backend", {"confirm": "yes", "dry_run": "1"})
    [run] = recoveries()
    assert response.status_code == 302 and run.dry_run is True


def test_the_alert_that_offered_it_is_named(plan, operator_client, django_capture_on_commit_callbacks):
    from alerting.models import Alert, AlertRule

    rule = AlertRule.objects.create(name="backend down", kind="job_down", threshold=0, recovery_plan="restart_backend")
    alert = Alert.objects.create(rule=rule, dedup_key="k", component="jobs", measurement="nightly", state="firing")
    html = operator_client.get(f"{PAGE}?alert={alert.pk}").content.decode()
    assert re.search(
        r'<p id="plan-alert">Offered by the alert <strong>backend down</strong> \(jobs:nightly\), firing', html
    )
    assert 'id="plan-alert"' not in operator_client.get(f"{PAGE}?alert=nonsense").content.decode()


@pytest.mark.parametrize("who", ["anonymous", "outsider"])
def test_no_login_or_no_staff_gets_nowhere(plan, client, outsider, who):
    if who == "outsider":
        client.force_login(outsider)
    page = client.get(PAGE)
    run = client.post("/deployments/recovery/restart_backend", {"confirm": "yes"})
    if who == "anonymous":
        assert page.status_code == run.status_code == 302 and page["Location"].startswith("/accounts/login/")
    else:
        assert page.status_code == run.status_code == 403
    assert recoveries() == []


def test_a_viewer_reads_the_dry_run_but_cannot_run_it(plan, viewer_client):
    html = viewer_client.get(PAGE).content.decode()
    assert 'id="plan-dry-run"' in html and 'name="confirm"' not in html
    assert "Running it needs the deployments.add_deployment permission." in html
    assert viewer_client.post("/deployments/recovery/restart_backend", {"confirm": "yes"}).status_code == 403
    assert recoveries() == []


def test_a_plan_that_cannot_run_says_why_and_offers_no_button(plan, operator_client):
    RecoveryPlan.objects.filter(pk=plan.pk).update(steps=[{"name": "x", "kind": "pray"}])
    html = operator_client.get(PAGE).content.decode()
    assert re.search(r'<p class="error" role="alert" id="plan-problem">This plan cannot run: [^<]*kind', html)
    assert 'name="confirm"' not in html
    assert operator_client.get("/deployments/recovery/no_such_plan/plan").status_code == 404
