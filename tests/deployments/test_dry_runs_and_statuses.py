"""A recovery plan's dry run is marked as one everywhere (lists, detail, dashboard, API) and never
counts as a release; each status on the deployment pages has its own tone, and log lines their level's."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.utils import timezone

from controlplane.audit import Actor
from deployments.defaults import ensure_defaults
from deployments.models import Deployment, DeploymentStatus, Environment, LogLevel, StepRun, StepStatus
from deployments.runner import RunOutcome, run
from deployments.selectors import environments_status
from deployments.services import deployment_request, log, recovery_run, rollback_versions
from monitoring.request_metrics import discard_pending
from tests.deployments.conftest import echo

pytestmark = pytest.mark.django_db
SYSTEM = Actor.system("tests")
BADGE = '<span class="badge dry-run"'


def release(environment: Environment, version: str, *, hours_ago: int) -> Deployment:
    at = timezone.now() - timedelta(hours=hours_ago)
    return Deployment.objects.create(
        environment=environment, version=version, status=DeploymentStatus.SUCCEEDED, requested_by="tests",
        created_at=at, started_at=at, finished_at=at,
    )  # fmt: skip


@pytest.fixture
def dry_run():
    """production (where the shipped plans act) runs v1 then v2; then a dry run of the database_failure
    plan, run to its end in-process."""
    ensure_defaults()
    demo = Environment.objects.get(name="production")
    v1, v2 = release(demo, "v1", hours_ago=3), release(demo, "v2", hours_ago=2)
    dry = recovery_run(failure_type="database_failure", actor=SYSTEM, dry_run=True)
    assert run(dry.pk) is RunOutcome.SUCCEEDED
    dry.refresh_from_db()
    return {"v1": v1, "v2": v2, "dry": dry}


@pytest.mark.django_db(transaction=True)  # the runner closes its connection when it ends
def test_a_dry_run_never_counts_as_a_release(dry_run):
    dry = dry_run["dry"]
    assert (dry.dry_run, dry.status, dry.version) == (True, DeploymentStatus.SUCCEEDED, "v2")
    demo = next(row for row in environments_status() if row["environment"] == "production")
    assert demo["currentVersion"] == "v2"
    assert demo["last"]["id"] == dry_run["v2"].pk, "the dry run became the environment's last deployment"
    assert rollback_versions("production") == ("v2", "v1")


@pytest.mark.django_db(transaction=True)
def test_a_dry_run_is_marked_on_the_list_the_detail_the_dashboard_and_the_api(dry_run, operator_client, api_client):
    dry, v2 = dry_run["dry"], dry_run["v2"]
    discard_pending()
    index = operator_client.get("/deployments/").content.decode()
    row = re.search(rf'<tr id="deployment-{dry.pk}">(.*?)</tr>', index, re.S).group(1)
    assert BADGE in row and 'data-status="succeeded"' in row
    assert BADGE not in re.search(rf'<tr id="deployment-{v2.pk}">(.*?)</tr>', index, re.S).group(1)
    environment = re.search(r'<tr id="env-production">(.*?)</tr>', index, re.S).group(1)
    assert f"#{v2.pk} v2" in environment and f"#{dry.pk}" not in environment

    detail = operator_client.get(f"/deployments/{dry.pk}/").content.decode()
    assert f"<h1>Dry run #{dry.pk}: production v2</h1>" in detail and BADGE in detail
    assert "runs nothing: it is never the environment's release" in detail
    assert 'data-status="skipped"' in detail  # each step said what it would do and ran nothing

    dashboard = operator_client.get("/").content.decode()
    item = re.search(rf'<li id="dash-deployment-{dry.pk}">(.*?)</li>', dashboard, re.S).group(1)
    assert BADGE in item and "recovery plan database_failure" in item
    assert BADGE not in re.search(rf'<li id="dash-deployment-{v2.pk}">(.*?)</li>', dashboard, re.S).group(1)

    client = api_client("deploy")
    assert client.get(f"/api/deployment/deployments/{dry.pk}").json()["dryRun"] is True
    assert client.get(f"/api/deployment/deployments/{v2.pk}").json()["dryRun"] is False
    status = client.get("/api/deployment/status").json()
    demo = next(row for row in status["environments"] if row["environment"] == "production")
    assert (demo["last"]["id"], demo["last"]["dryRun"], demo["currentVersion"]) == (v2.pk, False, "v2")


TONES = {
    DeploymentStatus.QUEUED: "running",
    DeploymentStatus.RUNNING: "running",
    DeploymentStatus.SUCCEEDED: "ok",
    DeploymentStatus.FAILED: "bad",
    DeploymentStatus.ROLLING_BACK: "running",
    DeploymentStatus.ROLLED_BACK: "warn",
    DeploymentStatus.ROLLBACK_FAILED: "bad",
    DeploymentStatus.CANCELLED: "neutral",
}


@pytest.mark.parametrize("status", list(DeploymentStatus))
def test_each_deployment_status_has_its_colour_on_the_list_the_detail_and_the_dashboard(
    operator_client, environment, status
):
    environment([echo("one", "1")])
    deployment = deployment_request(environment="test", version="v1", actor=SYSTEM)
    Deployment.objects.filter(pk=deployment.pk).update(status=status)
    pill = f'<span class="pill tone-{TONES[status]}" data-status="{status.value}">'
    label = f"</span> {status.label}</span>"
    for url, where in (
        ("/deployments/", rf'<tr id="deployment-{deployment.pk}">(.*?)</tr>'),
        (f"/deployments/{deployment.pk}/", r'<span id="status">(.*?</span></span>)'),
        ("/", rf'<li id="dash-deployment-{deployment.pk}">(.*?)</li>'),
    ):
        discard_pending()
        found = re.search(where, operator_client.get(url).content.decode(), re.S).group(1)
        assert pill in found and label in found, url


def test_step_runs_and_log_lines_show_their_status_and_level(operator_client, environment):
    environment([echo("one", "1")])
    deployment = deployment_request(environment="test", version="v1", actor=SYSTEM)
    for index, status in enumerate(StepStatus):
        StepRun.objects.create(deployment=deployment, index=index, name=f"step {status}", kind="command", status=status)
    log(deployment, "disk is getting full", level=LogLevel.WARNING)
    log(deployment, "migrate exited 1", level=LogLevel.ERROR, step="migrate")

    html = operator_client.get(f"/deployments/{deployment.pk}/").content.decode()
    steps = dict(
        re.findall(
            r"<td>step (\w+)</td><td class=\"secondary\">command</td>\s*<td><span class=\"pill tone-(\w+)\"", html
        )
    )
    assert steps == {"running": "running", "succeeded": "ok", "failed": "bad", "skipped": "neutral"}
    lines = re.findall(
        r'<span class="log-line level-(\w+) tone-(\w+)">[\d:]+ <span class="level">\w+</span>(.*?)</span>', html
    )
    assert [(level, tone, text.strip()) for level, tone, text in lines][-2:] == [
        ("warning", "warn", "disk is getting full"),
        ("error", "bad", "[migrate] migrate exited 1"),
    ]
    assert lines[0][:2] == ("info", "neutral")
