"""The deployments API as a client sees it: validation (422 naming the field), scopes, status, detail,
recovery plans (dry run), and rolling back to the previous release."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from deployments.defaults import RECOVERY_PLANS, ensure_defaults
from deployments.models import Deployment, DeploymentStatus, Pipeline, StepRun
from deployments.runner import RunOutcome, run
from tests.deployments.conftest import echo

DEPLOY = "/api/deployment/deploy"
STEPS = [echo("one", "step one"), echo("two", "step two")]


def post(client, body, path=DEPLOY):
    return client.post(path, body, content_type="application/json")


@pytest.fixture
def api(api_client, environment):
    environment(STEPS)
    return api_client("deploy")


def finished(environment_name: str, version: str, *, minutes_ago: int, status="succeeded", **extra) -> Deployment:
    """A deployment that ended ``minutes_ago`` (history for the status and rollback answers)."""
    from deployments.models import Environment

    at = timezone.now() - timedelta(minutes=minutes_ago)
    return Deployment.objects.create(
        environment=Environment.objects.get(name=environment_name),
        version=version,
        status=status,
        requested_by="tests",
        created_at=at - timedelta(minutes=1),
        started_at=at - timedelta(minutes=1),
        finished_at=at,
        **extra,
    )


# --- Input ---------------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"environment": "nope", "version": "v1"}, "environment", "no environment named 'nope' (environments: test)"),
        ({"version": "v1"}, "environment", "required"),
        ({"environment": "test", "version": ""}, "version", "required"),
        ({"environment": "test", "version": "   "}, "version", "required"),
        ({"environment": "test"}, "version", "required"),
        ({"environment": "test", "version": 42}, "version", "required"),
        ({"environment": "test", "version": "v1 beta"}, "version", "letters, digits, '.', '_', '+' and '-'"),
        ({"environment": "test", "version": "v" * 129}, "version", "at most 128 characters"),
        ({"environment": "test", "version": "v1", "colour": "red"}, "colour", "unknown field"),
        ({"environment": "test", "version": "v1", "type": "recovery"}, "type", "deploy or rollback"),
    ],
)
def test_bad_input_is_a_422_naming_the_field(api, body, field, words):
    response = post(api, body)
    assert response.status_code == 422, response.content
    answer = response.json()
    assert answer["error"] == "invalid" and answer["field"] == field and words in answer["detail"]
    assert not Deployment.objects.exists()


@pytest.mark.django_db
def test_a_body_that_is_not_json_is_a_400(api):
    response = api.post(DEPLOY, "environment=test", content_type="application/json")
    assert response.status_code == 400 and response.json()["error"] == "invalid_json"


@pytest.mark.django_db
def test_a_pipeline_whose_stored_steps_are_invalid_is_refused_before_anything_is_queued(api):
    # Written past the service (an old row, a hand edit in the database): the request still checks.
    Pipeline.objects.filter(name="test-pipeline").update(steps=[echo("one", "x"), {"name": "two", "kind": "teleport"}])
    response = post(api, {"environment": "test", "version": "v1"})
    assert response.status_code == 422
    answer = response.json()
    assert answer["field"].endswith("steps[1].kind") and "test-pipeline" in answer["field"]
    assert "unknown kind 'teleport'" in answer["detail"]
    assert not Deployment.objects.exists()


@pytest.mark.django_db
def test_deploying_needs_the_deploy_scope(client, api_client, environment):
    environment(STEPS)
    body = {"environment": "test", "version": "v1"}
    anonymous = post(client, body)
    assert anonymous.status_code == 401 and anonymous["WWW-Authenticate"].startswith("Bearer")
    assert post(api_client("flags:read"), body).status_code == 403
    assert client.get("/api/deployment/status").status_code == 403  # the flags:read token is still set
    assert not Deployment.objects.exists()


@pytest.mark.django_db
def test_a_deploy_request_is_accepted_and_locks_the_environment(api):
    response = post(api, {"environment": "test", "version": "v2.0.0"})
    assert response.status_code == 202
    body = response.json()
    assert (body["environment"], body["version"], body["type"], body["status"]) == (
        "test",
        "v2.0.0",
        "deploy",
        "queued",
    )
    assert body["requestedBy"].startswith("token:test")
    again = post(api, {"environment": "test", "version": "v2.0.1"})
    assert again.status_code == 409
    assert again.json()["active"] == {"id": body["id"], "url": body["url"]}


# --- Reading -------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_status_lists_each_environment_with_its_active_and_last_deployment_and_readiness(api, environment):
    environment([echo("only", "x")], name="staging")
    finished("test", "v1", minutes_ago=30)
    finished("test", "v2", minutes_ago=20, status="rolled_back", error="step two failed")
    active = post(api, {"environment": "test", "version": "v3"}).json()

    body = api.get("/api/deployment/status").json()
    rows = {row["environment"]: row for row in body["environments"]}
    assert set(rows) == {"test", "staging"}
    test = rows["test"]
    assert test["locked"] is True and test["pipeline"] == "test-pipeline"
    assert test["currentVersion"] == "v1"  # the last one that succeeded
    assert (test["active"]["id"], test["active"]["status"]) == (active["id"], "queued")
    assert (test["last"]["version"], test["last"]["status"], test["last"]["error"]) == (
        "v2", "rolled_back", "step two failed",
    )  # fmt: skip
    assert rows["staging"] == {
        "environment": "staging",
        "pipeline": "staging-pipeline",
        "healthUrl": None,
        "currentVersion": None,
        "locked": False,
        "active": None,
        "last": None,
    }
    readiness = body["readiness"]
    assert readiness["status"] in ("pass", "warn", "fail")
    names = {item["name"] for item in readiness["items"]}
    assert {"database", "backups", "environment"} <= names
    assert all(set(item) == {"name", "status", "message", "hint"} for item in readiness["items"])


@pytest.mark.django_db(transaction=True)
def test_a_deployment_with_its_steps_and_only_the_newer_log_lines_after_an_id(api):
    deployment_id = post(api, {"environment": "test", "version": "v5"}).json()["id"]
    first = api.get(f"/api/deployment/deployments/{deployment_id}").json()
    assert first["status"] == "queued" and first["steps"] == []
    assert first["plannedSteps"] == ["one", "two"]
    [requested] = first["log"]
    assert requested["message"].startswith("deploy v5 to test requested by token:test")

    assert run(deployment_id) is RunOutcome.SUCCEEDED
    newer = api.get(f"/api/deployment/deployments/{deployment_id}?after={requested['id']}").json()
    assert newer["status"] == "succeeded"
    assert requested["id"] not in [line["id"] for line in newer["log"]]
    assert newer["log"][0]["message"].startswith("started on ") and newer["log"][-1]["message"] == "succeeded"
    assert [(s["name"], s["status"], s["output"], s["exitCode"]) for s in newer["steps"]] == [
        ("one", "succeeded", "step one\n", 0),
        ("two", "succeeded", "step two\n", 0),
    ]
    last = newer["log"][-1]["id"]
    assert api.get(f"/api/deployment/deployments/{deployment_id}?after={last}").json()["log"] == []
    bad = api.get(f"/api/deployment/deployments/{deployment_id}?after=yesterday")
    assert bad.status_code == 400 and bad.json()["field"] == "after"
    assert api.get("/api/deployment/deployments/999999").status_code == 404


# --- Recovery plans ------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_each_shipped_recovery_plan_runs_dry_and_only_says_what_it_would_do(api_client):
    ensure_defaults()
    api = api_client("deploy")
    assert set(RECOVERY_PLANS) == {"application_failure", "database_failure", "feature_flag_failure"}
    for failure_type, plan in RECOVERY_PLANS.items():
        response = api.post(f"/api/deployment/recovery/rollback/{failure_type}?dry_run=true")
        assert response.status_code == 202, response.content
        body = response.json()
        assert (body["type"], body["recoveryType"], body["dryRun"], body["environment"]) == (
            "recovery", failure_type, True, "production",
        )  # fmt: skip
        assert run(body["id"]) is RunOutcome.SUCCEEDED
        runs = list(StepRun.objects.filter(deployment_id=body["id"]).order_by("index"))
        assert [(r.name, r.status) for r in runs] == [(step["name"], "skipped") for step in plan["steps"]]
        assert all(r.output.startswith("would ") for r in runs)
        detail = api.get(f"/api/deployment/deployments/{body['id']}").json()
        step_lines = [line["message"] for line in detail["log"] if line["step"]]
        assert len(step_lines) == len(plan["steps"]) and all(m.startswith("would ") for m in step_lines)
    # Nothing happened: no flag changed, no backup was taken.
    from backups.models import Backup
    from flags.models import Flag

    assert not Backup.objects.exists()
    assert Flag.objects.get(name="demo_release_banner").enabled is False
    run_step_lines = StepRun.objects.filter(deployment__recovery_type="application_failure").values_list(
        "output", flat=True
    )
    # The product's tools, not the demo's: Render's rollback hook, named by its secret setting.
    assert any("would POST ${RENDER_ROLLBACK_HOOK_URL}" in text for text in run_step_lines)
    assert not any("deployments.demo" in text for text in run_step_lines)


@pytest.mark.django_db
def test_an_unknown_recovery_plan_is_a_404_and_a_bad_dry_run_a_422(api_client):
    ensure_defaults()
    api = api_client("deploy")
    missing = api.post("/api/deployment/recovery/rollback/meteor_strike?dry_run=true")
    assert missing.status_code == 404
    assert missing.json()["error"] == "not_found" and "application_failure" in missing.json()["detail"]
    bad = api.post("/api/deployment/recovery/rollback/application_failure?dry_run=maybe")
    assert bad.status_code == 422 and bad.json()["field"] == "dry_run"
    assert api_client("flags:read").post("/api/deployment/recovery/rollback/application_failure").status_code == 403
    assert not Deployment.objects.exists()


@pytest.mark.django_db
def test_a_recovery_plan_whose_stored_steps_are_invalid_is_refused_naming_the_plan(api_client):
    from deployments.models import RecoveryPlan

    ensure_defaults()
    RecoveryPlan.objects.filter(failure_type="database_failure").update(steps=[{"name": "x", "kind": "pray"}])
    response = api_client("deploy").post("/api/deployment/recovery/rollback/database_failure?dry_run=true")
    assert response.status_code == 422
    assert response.json()["field"] == "recovery plan database_failure: steps[0].kind"  # not the demo pipeline
    assert not Deployment.objects.exists()


# --- Rolling back to the previous release --------------------------------------------------------


@pytest.mark.django_db
def test_rollback_deploys_the_last_succeeded_version_that_differs_from_the_current_one(api):
    finished("test", "v1", minutes_ago=50)
    finished("test", "v2", minutes_ago=40)
    finished("test", "v3", minutes_ago=30, status="rolled_back")  # never current
    finished("test", "v9", minutes_ago=25, dry_run=True)  # a dry run changed nothing
    finished("test", "current", minutes_ago=22, type="recovery", recovery_type="application_failure")
    finished("test", "v2", minutes_ago=20)  # v2 again: still the current one
    response = post(api, {"environment": "test", "type": "rollback"})
    assert response.status_code == 202, response.content
    body = response.json()
    assert (body["type"], body["version"], body["status"]) == ("rollback", "v1", "queued")
    assert Deployment.objects.get(pk=body["id"]).steps == STEPS


@pytest.mark.django_db
def test_rollback_with_no_previous_release_is_a_422(api):
    nothing = post(api, {"environment": "test", "type": "rollback"})
    assert nothing.status_code == 422 and nothing.json()["field"] == "environment"
    assert "no succeeded deployment to roll back to" in nothing.json()["detail"]
    finished("test", "v1", minutes_ago=30)
    finished("test", "v1", minutes_ago=20)
    only_one = post(api, {"environment": "test", "type": "rollback"})
    assert only_one.status_code == 422 and only_one.json()["field"] == "environment"
    assert "has only ever run v1: no previous release" in only_one.json()["detail"]
    assert Deployment.objects.filter(type="rollback").count() == 0


@pytest.mark.django_db(transaction=True)
def test_a_rollback_runs_the_pipeline_with_the_previous_version(api):
    finished("test", "v1", minutes_ago=50)
    finished("test", "v2", minutes_ago=40)
    body = post(api, {"environment": "test", "type": "rollback"}).json()
    assert run(body["id"]) is RunOutcome.SUCCEEDED
    status = api.get("/api/deployment/status").json()
    [row] = status["environments"]
    assert row["currentVersion"] == "v1" and row["last"]["type"] == "rollback"
    assert Deployment.objects.get(pk=body["id"]).status == DeploymentStatus.SUCCEEDED
