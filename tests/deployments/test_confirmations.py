"""Cancel, roll back and run a recovery plan ask first, without JavaScript: the button's POST changes
nothing and shows a page naming what will happen; the page's POST with confirm=yes acts."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from controlplane.audit import Actor
from controlplane.models import AuditEvent
from deployments.models import Deployment, DeploymentStatus, StepRun
from deployments.services import deployment_request
from tests.deployments.conftest import echo

pytestmark = pytest.mark.django_db
SYSTEM = Actor.system("tests")
STEPS = [echo("migrate", "migrating"), echo("restart", "restarting")]


def finished(environment, version: str, *, minutes_ago: int) -> Deployment:
    at = timezone.now() - timedelta(minutes=minutes_ago)
    return Deployment.objects.create(
        environment=environment, version=version, status=DeploymentStatus.SUCCEEDED, requested_by="tests",
        created_at=at, started_at=at, finished_at=at,
    )  # fmt: skip


def test_cancel_asks_naming_the_deployment_its_version_and_its_running_step(operator_client, environment):
    environment(STEPS, name="demo")
    deployment = deployment_request(environment="demo", version="v3", actor=SYSTEM)
    Deployment.objects.filter(pk=deployment.pk).update(status=DeploymentStatus.RUNNING)
    StepRun.objects.create(deployment=deployment, phase="forward", index=0, name="migrate", kind="command")
    for data in ({}, {"confirm": "no"}):
        response = operator_client.post(f"/deployments/{deployment.pk}/cancel", data)
        assert response.status_code == 200
        html = response.content.decode()
        assert f"Cancel deployment #{deployment.pk} of demo (v3, running step &#x27;migrate&#x27;)?" in html
        assert '<input type="hidden" name="confirm" value="yes">' in html
        assert f'<a href="/deployments/{deployment.pk}/">Back, change nothing</a>' in html
    deployment.refresh_from_db()
    assert (deployment.status, deployment.cancel_requested) == (DeploymentStatus.RUNNING, False)
    assert not AuditEvent.objects.filter(action="deployment.cancel").exists()

    response = operator_client.post(f"/deployments/{deployment.pk}/cancel", {"confirm": "yes"})
    assert response.status_code == 302
    deployment.refresh_from_db()
    assert deployment.cancel_requested is True


def test_cancel_of_a_queued_deployment_says_queued(operator_client, environment):
    environment(STEPS)
    deployment = deployment_request(environment="test", version="v1", actor=SYSTEM)
    html = operator_client.post(f"/deployments/{deployment.pk}/cancel").content.decode()
    assert f"Cancel deployment #{deployment.pk} of test (v1, queued)?" in html
    deployment.refresh_from_db()
    assert deployment.status == DeploymentStatus.QUEUED


def test_roll_back_asks_naming_both_versions_then_deploys_the_previous_one(operator_client, environment):
    env = environment(STEPS, name="demo")
    finished(env, "v2", minutes_ago=30)
    finished(env, "v3", minutes_ago=10)
    response = operator_client.post("/deployments/environments/demo/rollback")
    assert response.status_code == 200
    html = response.content.decode()
    assert "Roll back demo from v3 to v2?" in html and "Roll back to v2</button>" in html
    assert Deployment.objects.count() == 2

    response = operator_client.post("/deployments/environments/demo/rollback", {"confirm": "yes"})
    rollback = Deployment.objects.get(type="rollback")
    assert response.status_code == 302 and response["Location"] == f"/deployments/{rollback.pk}/"
    assert (rollback.version, rollback.status) == ("v2", DeploymentStatus.QUEUED)


def test_roll_back_with_nothing_to_roll_back_to_says_so_without_asking(operator_client, environment):
    environment(STEPS, name="demo")
    response = operator_client.post("/deployments/environments/demo/rollback", follow=True)
    assert response.redirect_chain == [("/deployments/", 302)]
    assert "demo has no succeeded deployment to roll back to" in response.content.decode()
    assert not Deployment.objects.exists()


def test_running_a_recovery_plan_asks_naming_the_plan_environment_and_steps(operator_client):
    from deployments.defaults import RECOVERY_PLANS, ensure_defaults

    ensure_defaults()
    response = operator_client.post("/deployments/recovery/database_failure", {"dry_run": "0"})
    assert response.status_code == 200
    html = response.content.decode()
    assert "Run recovery plan database_failure on production?" in html
    names = [step["name"] for step in RECOVERY_PLANS["database_failure"]["steps"]]
    assert all(name in html for name in names) and "Steps, in order: " + names[0] in html
    assert not Deployment.objects.exists()

    response = operator_client.post("/deployments/recovery/database_failure", {"dry_run": "0", "confirm": "yes"})
    deployment = Deployment.objects.get()
    assert response.status_code == 302
    assert (deployment.recovery_type, deployment.dry_run) == ("database_failure", False)


def test_a_dry_run_runs_nothing_so_it_does_not_ask(operator_client):
    from deployments.defaults import ensure_defaults

    ensure_defaults()
    response = operator_client.post("/deployments/recovery/database_failure", {"dry_run": "1"})
    assert response.status_code == 302
    assert Deployment.objects.get().dry_run is True


def test_the_buttons_say_a_question_follows(operator_client, environment):
    from deployments.defaults import ensure_defaults

    ensure_defaults()
    environment(STEPS)
    html = operator_client.get("/deployments/").content.decode()
    assert "Roll back…</button>" in html and "Run database_failure…</button>" in html
