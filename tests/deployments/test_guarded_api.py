"""Guarded rollouts through the operations API: start (POST /guarded-rollouts) and pause, resume, skip,
abort (POST /guarded-rollouts/{id}/{action}); scoped deploy + flags:write, audited, production confirmed."""

from __future__ import annotations

import pytest

from controlplane.audit import Actor
from controlplane.models import AuditEvent, Scope
from deployments.defaults import ensure_defaults
from deployments.models import Deployment, DeploymentStatus, DeploymentType
from deployments.services import deployment_request
from flags.services import flag_create
from monitoring.models import Service
from tests.deployments.conftest import echo

pytestmark = pytest.mark.django_db
SYSTEM = Actor.system("tests")
START = "/api/deployment/guarded-rollouts"
FLAG = "checkout_v2"


@pytest.fixture
def api(api_client, environment):
    """A token with deploy and flags:write; the environment "test" (not production) and "production"; the flag;
    a monitored service for the default guards."""
    ensure_defaults()
    environment([echo("one", "step one")])
    flag_create(data={"name": FLAG}, actor=SYSTEM)
    Service.objects.create(name="demo-backend")
    return api_client(Scope.DEPLOY, Scope.FLAGS_WRITE)


def post(client, path, body=None):
    return client.post(path, body if body is not None else {}, content_type="application/json")


def test_a_guarded_rollout_is_started_queued_and_audited_as_the_tokens(api):
    response = post(api, START, {"flag": FLAG, "environment": "test", "percents": [10, 100], "hold": 30})
    assert response.status_code == 202, response.json()
    body = response.json()
    deployment = Deployment.objects.get()
    assert (body["id"], body["flag"], body["type"], body["status"]) == (deployment.pk, FLAG, "guarded", "queued")
    assert response["Location"] == deployment.get_absolute_url()
    assert (deployment.type, deployment.flag) == (DeploymentType.GUARDED, FLAG)
    holds = [step for step in deployment.steps if step["kind"] == "analysis"]
    assert [step["duration"] for step in holds] == [30, 30]
    event = AuditEvent.objects.get(action="guarded_rollout.start")
    assert event.actor_token is not None and event.after["percents"] == [10, 100]


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"flag": "nope", "environment": "test"}, "flag", "no flag named 'nope'"),
        ({"flag": FLAG, "environment": "mars"}, "environment", "no pipeline runner"),
        ({"flag": FLAG, "environment": "test", "percents": [50, 10]}, "percents[1]", "higher than the one before"),
        ({"flag": FLAG, "environment": "test", "hold": 0}, "hold", "a number from 1"),
        ({"flag": FLAG, "environment": "test", "colour": "red"}, "colour", "unknown field"),
        ({"environment": "test"}, "flag", "required"),
        ({"flag": FLAG, "environment": "production"}, "confirm", "production is a production environment"),
    ],
)
def test_bad_input_is_refused_naming_the_field_and_nothing_starts(api, body, field, words):
    response = post(api, START, body)
    assert response.status_code == 422, response.json()
    assert response.json()["field"] == field and words in response.json()["detail"]
    assert not Deployment.objects.exists()
    assert not AuditEvent.objects.filter(action__startswith="guarded_rollout.").exists()


def test_in_production_confirm_starts_it(api):
    response = post(api, START, {"flag": FLAG, "environment": "production", "confirm": True})
    assert response.status_code == 202, response.json()
    assert Deployment.objects.get().environment.name == "production"


def test_a_second_rollout_of_the_flag_there_is_locked(api):
    first = post(api, START, {"flag": FLAG, "environment": "test"}).json()
    response = post(api, START, {"flag": FLAG, "environment": "test"})
    assert response.status_code == 409
    assert response.json()["error"] == "locked" and response.json()["active"]["id"] == first["id"]
    assert Deployment.objects.count() == 1


def test_a_token_without_flags_write_is_refused(api, api_client):
    client = api_client(Scope.DEPLOY)
    response = post(client, START, {"flag": FLAG, "environment": "test"})
    assert response.status_code == 403 and response.json()["scope"] == "flags:write"
    deployment = deployment_request(environment="test", version="v1", actor=SYSTEM)
    assert post(client, f"{START}/{deployment.pk}/abort").status_code == 403
    assert not Deployment.objects.filter(flag=FLAG).exists()


def test_pause_resume_skip_and_abort(api):
    rollout = post(api, START, {"flag": FLAG, "environment": "test"}).json()
    url = f"{START}/{rollout['id']}"
    paused = post(api, f"{url}/pause")
    assert paused.status_code == 200 and paused.json()["paused"] is True
    again = post(api, f"{url}/pause")
    assert again.status_code == 409 and "paused already" in again.json()["detail"]
    assert post(api, f"{url}/resume").json()["paused"] is False
    assert post(api, f"{url}/skip").status_code == 200
    assert Deployment.objects.get(pk=rollout["id"]).skip_requested_at is not None
    aborted = post(api, f"{url}/abort")
    assert aborted.status_code == 200 and aborted.json()["status"] == DeploymentStatus.CANCELLED
    assert post(api, f"{url}/abort").status_code == 409  # over: nothing left to abort
    audited = set(AuditEvent.objects.filter(action__startswith="guarded_rollout.").values_list("action", flat=True))
    assert audited == {"guarded_rollout.start", "guarded_rollout.paused", "guarded_rollout.resumed",
                       "guarded_rollout.skipped", "guarded_rollout.abort"}  # fmt: skip
    unknown = post(api, f"{url}/explode")  # no such action: no such address
    assert unknown.status_code == 404 and "pause, resume, skip, abort" in unknown.json()["detail"]
    assert post(api, f"{START}/999999/pause").status_code == 404


def test_in_production_an_action_needs_confirm_and_a_deployment_is_no_guarded_rollout(api):
    rollout = post(api, START, {"flag": FLAG, "environment": "production", "confirm": True}).json()
    refused = post(api, f"{START}/{rollout['id']}/pause")
    assert refused.status_code == 422 and refused.json()["field"] == "confirm"
    assert Deployment.objects.get(pk=rollout["id"]).paused is False
    assert post(api, f"{START}/{rollout['id']}/pause?confirm=true").json()["paused"] is True
    deployment = deployment_request(environment="test", version="v1", actor=SYSTEM)
    plain = post(api, f"{START}/{deployment.pk}/pause")
    assert plain.status_code == 422 and "not a guarded rollout" in plain.json()["detail"]
