"""Deployment pages (viewer and operator), the admin screens, and ``manage.py deploy``."""

from __future__ import annotations

import json
import re
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from controlplane.audit import Actor
from deployments.models import Deployment, DeploymentStatus, Pipeline
from deployments.services import deployment_request
from tests.deployments.conftest import echo, wait_for

SYSTEM = Actor.system("tests")
STEPS = [echo("one", "step one"), echo("two", "step two")]


@pytest.fixture
def queued(environment):
    """A queued deployment of the test environment (no worker: it stays queued)."""
    environment(STEPS)
    return deployment_request(environment="test", version="v1", actor=SYSTEM)


# --- Pages ---------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_pages_need_a_login(client, queued):
    for path in ("/deployments/", f"/deployments/{queued.pk}/", f"/deployments/{queued.pk}/live"):
        response = client.get(path)
        assert response.status_code == 302 and response["Location"].startswith("/accounts/login/"), path
    response = client.post("/deployments/deploy", {"environment": "test", "version": "v2"})
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")
    assert Deployment.objects.count() == 1


@pytest.mark.django_db
def test_a_viewer_sees_deployments_but_no_deploy_controls(viewer_client, queued):
    from deployments.defaults import ensure_defaults

    ensure_defaults()
    index = viewer_client.get("/deployments/")
    assert index.status_code == 200
    html = index.content.decode()
    assert f'id="deployment-{queued.pk}"' in html and "application_failure" in html
    assert 'id="deploy-form"' not in html and "Roll back" not in html and "Dry run" not in html
    detail = viewer_client.get(f"/deployments/{queued.pk}/")
    assert detail.status_code == 200
    assert f"Deployment #{queued.pk}: test v1" in detail.content.decode()
    assert "Cancel…</button>" not in detail.content.decode()


@pytest.mark.django_db
def test_a_viewer_cannot_deploy_cancel_roll_back_or_run_a_plan(viewer_client, queued):
    from deployments.defaults import ensure_defaults

    ensure_defaults()
    posts = [
        ("/deployments/deploy", {"environment": "test", "version": "v2"}),
        (f"/deployments/{queued.pk}/cancel", {}),
        ("/deployments/environments/test/rollback", {}),
        ("/deployments/recovery/application_failure", {"dry_run": "1"}),
    ]
    for path, data in posts:
        assert viewer_client.post(path, data).status_code == 403, path
    queued.refresh_from_db()
    assert queued.status == DeploymentStatus.QUEUED and Deployment.objects.count() == 1


@pytest.mark.django_db
def test_an_operator_deploys_from_the_form_and_lands_on_the_deployment(operator_client, environment):
    environment(STEPS)
    index = operator_client.get("/deployments/").content.decode()
    assert 'id="deploy-form"' in index and '<option value="test">test</option>' in index
    response = operator_client.post("/deployments/deploy", {"environment": "test", "version": "v4.1.0"})
    deployment = Deployment.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/deployments/{deployment.pk}/"
    assert (deployment.version, deployment.status, deployment.requested_by) == ("v4.1.0", "queued", "operator")
    page = operator_client.get(response["Location"]).content.decode()
    assert "Cancel…</button>" in page and "pending" in page


@pytest.mark.django_db
def test_a_bad_version_shows_the_error_on_the_form_and_queues_nothing(operator_client, environment):
    environment(STEPS)
    response = operator_client.post("/deployments/deploy", {"environment": "test", "version": "v1 final"})
    assert response.status_code == 422
    html = response.content.decode()
    assert '<p class="error" id="deploy-error" role="alert">version: at most 128 characters' in html
    assert 'value="v1 final" aria-invalid="true"' in html  # the form as entered, its field marked
    assert not Deployment.objects.exists()


@pytest.mark.django_db
def test_deploying_to_a_locked_environment_shows_who_holds_it(operator_client, queued):
    response = operator_client.post("/deployments/deploy", {"environment": "test", "version": "v2"}, follow=True)
    assert response.redirect_chain == [(f"/deployments/{queued.pk}/", 302)]
    assert f"test is locked by deployment #{queued.pk} (queued)" in response.content.decode()


@pytest.mark.django_db
def test_an_operator_cancels_a_queued_deployment(operator_client, queued):
    response = operator_client.post(f"/deployments/{queued.pk}/cancel", {"confirm": "yes"}, follow=True)
    assert f"Cancel requested for deployment #{queued.pk}." in response.content.decode()
    queued.refresh_from_db()
    assert queued.status == DeploymentStatus.CANCELLED and "cancelled by operator" in queued.error


@pytest.mark.django_db
def test_the_live_partial_renders_the_status_steps_and_log(viewer_client, queued):
    response = viewer_client.get(f"/deployments/{queued.pk}/live")
    assert response.status_code == 200
    html = response.content.decode()
    assert "<html" not in html  # a fragment, fetched by the page's script
    assert 'id="status"><span class="pill tone-running" data-status="queued">' in html
    assert re.search(
        r"<td>one</td><td class=\"secondary\"></td><td><span class=\"pill tone-running\"[^>]*>.*? pending</span></td>",
        html,
    )
    assert "<td>two</td>" in html
    assert "deploy v1 to test requested by tests" in html
    assert viewer_client.get("/deployments/999999/live").status_code == 404


# --- Admin ---------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_pipeline_admin_shows_the_schema_error_on_the_steps_field_and_saves_nothing(operator_client, environment):
    pipeline = environment(STEPS).pipeline
    bad = [{"name": "one", "kind": "teleport"}]
    change = operator_client.post(
        f"/admin/deployments/pipeline/{pipeline.pk}/change/",
        {"name": pipeline.name, "description": "changed", "steps": json.dumps(bad)},
    )
    assert change.status_code == 200
    html = change.content.decode()
    assert "steps[0].kind: unknown kind &#x27;teleport&#x27;" in html
    pipeline.refresh_from_db()
    assert (pipeline.steps, pipeline.description) == (STEPS, "")
    add = operator_client.post(
        "/admin/deployments/pipeline/add/",
        {"name": "other", "steps": json.dumps([echo("a", "x"), {"name": "b", "kind": "command"}])},
    )
    assert add.status_code == 200 and "steps[1].argv" in add.content.decode()
    assert list(Pipeline.objects.values_list("name", flat=True)) == ["test-pipeline"]


@pytest.mark.django_db
def test_the_pipeline_admin_saves_valid_steps_through_the_service(operator_client, environment):
    from controlplane.models import AuditEvent

    pipeline = environment(STEPS).pipeline
    steps = [echo("only", "x")]
    response = operator_client.post(
        f"/admin/deployments/pipeline/{pipeline.pk}/change/",
        {"name": pipeline.name, "description": "one step", "steps": json.dumps(steps)},
    )
    assert response.status_code == 302
    pipeline.refresh_from_db()
    assert pipeline.steps == steps and pipeline.description == "one step"
    event = AuditEvent.objects.filter(action="pipeline.update").get()
    assert event.actor_label == "operator"


@pytest.mark.django_db
def test_editing_a_pipeline_or_environment_in_the_admin_changes_it_and_never_makes_a_copy(operator_client, environment):
    from deployments.models import Environment

    env = environment(STEPS)
    pipeline = env.pipeline
    steps = [echo("only", "x")]
    operator_client.post(
        f"/admin/deployments/pipeline/{pipeline.pk}/change/",
        {"name": "renamed", "description": "", "steps": json.dumps(steps)},  # the name is read-only here
    )
    assert list(Pipeline.objects.values_list("pk", "name")) == [(pipeline.pk, "test-pipeline")]
    assert Environment.objects.get(name="test").pipeline.steps == steps  # what the next deployment runs
    operator_client.post(
        f"/admin/deployments/environment/{env.pk}/change/",
        {"name": "production", "pipeline": pipeline.pk, "health_url": "http://127.0.0.1:9/health"},
    )
    assert list(Environment.objects.values_list("pk", "name", "health_url")) == [
        (env.pk, "test", "http://127.0.0.1:9/health")
    ]
    page = operator_client.get(f"/admin/deployments/environment/{env.pk}/change/").content.decode()
    assert 'name="name"' not in page


@pytest.mark.django_db
def test_the_environment_admin_deploy_action_queues_a_deployment(operator_client, environment):
    env = environment(STEPS)
    action = {"action": "deploy", "_selected_action": [env.pk], "index": "0"}
    response = operator_client.post("/admin/deployments/environment/", {**action, "version": "v5"}, follow=True)
    deployment = Deployment.objects.get()
    assert (deployment.version, deployment.status, deployment.requested_by) == ("v5", "queued", "operator")
    assert f"Test: deployment #{deployment.pk} queued." in response.content.decode()  # the admin capitalises
    missing = operator_client.post("/admin/deployments/environment/", {**action, "version": ""}, follow=True)
    assert "Test: version: required: a non-empty string" in missing.content.decode()
    locked = operator_client.post("/admin/deployments/environment/", {**action, "version": "v6"}, follow=True)
    assert f"locked by deployment #{deployment.pk}" in locked.content.decode()
    assert Deployment.objects.count() == 1


# --- manage.py deploy ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_deploy_without_wait_prints_the_deployment_and_returns(environment):
    environment(STEPS)
    out = StringIO()
    call_command("deploy", "test", version="v3", stdout=out)
    deployment = Deployment.objects.get()
    assert out.getvalue() == f"deployment #{deployment.pk}: deploy v3 to test\n"
    assert (deployment.status, deployment.requested_by) == ("queued", "manage.py deploy")


@pytest.mark.django_db
def test_deploy_to_an_unknown_environment_names_it(environment):
    environment(STEPS)
    with pytest.raises(CommandError) as raised:
        call_command("deploy", "nope", version="v", stdout=StringIO())
    assert str(raised.value) == "environment: no environment named 'nope' (environments: test)"
    with pytest.raises(CommandError, match="has no succeeded deployment"):
        call_command("deploy", "test", rollback=True, stdout=StringIO())
    assert not Deployment.objects.exists()


@pytest.fixture
def demo(transactional_db):
    """The demo environment as make run creates it, and the backup target its backup step uses
    (made by a data migration, which an earlier transactional test may have flushed)."""
    from backups.models import BackupTarget
    from deployments.defaults import ensure_defaults

    BackupTarget.objects.get_or_create(name="default", defaults={"url_env": ""})
    ensure_defaults()
    # Without its last step, the analysis: a minute of the demo product's figures, which this test does not
    # serve (test_analysis_worker.py deploys the demo steps with their analysis against the demo product).
    from deployments.defaults import DEMO, DEMO_STEPS
    from deployments.models import Pipeline

    assert DEMO_STEPS[-1]["kind"] == "analysis"
    Pipeline.objects.filter(name=DEMO).update(steps=DEMO_STEPS[:-1])


@pytest.mark.django_db(transaction=True)
def test_deploy_wait_streams_the_demo_deployment_and_fails_when_it_rolls_back(demo, worker):
    worker()  # one worker for both runs: starting one takes seconds
    out = StringIO()
    call_command("deploy", "demo", version="v1", wait=True, timeout=90, stdout=out)
    deployment = Deployment.objects.get()
    lines = out.getvalue().splitlines()
    assert lines[0] == f"deployment #{deployment.pk}: deploy v1 to demo"
    assert any(line.endswith("[backend deploy] command step started") for line in lines)
    assert any("[database migration] succeeded in " in line for line in lines)
    assert lines[-1].endswith("info    succeeded")
    assert wait_for(deployment).status == DeploymentStatus.SUCCEEDED

    out = StringIO()
    with pytest.raises(CommandError) as raised:
        call_command("deploy", "demo", version="bad-1", wait=True, timeout=90, stdout=out)
    failed = Deployment.objects.exclude(pk=deployment.pk).get()
    assert str(raised.value) == f"deployment #{failed.pk} ended rolled_back"
    text = out.getvalue()
    assert text.startswith(f"deployment #{failed.pk}: deploy bad-1 to demo\n")
    assert "[backend deploy] failed after " in text and "exited with 1" in text
    assert "[rollback: backend rollback] succeeded in " in text
    assert "[rollback: revert migration] succeeded in " in text
    assert text.splitlines()[-1].endswith("rolled back")
    assert "[frontend deploy]" not in text
