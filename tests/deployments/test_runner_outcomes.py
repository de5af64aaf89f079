"""What a call of the runner comes to (``deployments.runner.RunOutcome``): the status it finished the
deployment in, ``NOT_CLAIMED`` for a deployment that is not its to run, ``CLAIM_LOST`` when the reaper took
the deployment over while it ran."""

from __future__ import annotations

import threading
import time

import pytest
from django.db import connection

from controlplane.audit import Actor
from deployments.models import FINISHED, Deployment, DeploymentStatus, LogLine, StepRun, StepStatus
from deployments.runner import RunOutcome, continue_rollback, run
from deployments.services import deployment_request
from tests.deployments.conftest import cmd, echo

pytestmark = [pytest.mark.django_db(transaction=True)]
SYSTEM = Actor.system("tests")


def deploy() -> Deployment:
    return deployment_request(environment="test", version="v1", actor=SYSTEM)


def test_a_run_returns_the_status_it_finished_in_and_a_second_run_not_claimed(environment):
    environment([echo("one", "once")])
    deployment = deploy()

    assert run(deployment.pk) is RunOutcome.SUCCEEDED
    assert run(deployment.pk) is RunOutcome.NOT_CLAIMED
    assert list(StepRun.objects.filter(deployment=deployment).values_list("output", flat=True)) == ["once\n"]


def test_a_failed_step_rolled_back_returns_rolled_back(environment):
    environment([echo("one", "step one", rollback=echo("undo one", "undone")), cmd("two", "import sys; sys.exit(3)")])

    assert run(deploy().pk) is RunOutcome.ROLLED_BACK


def test_a_rollback_under_a_claim_the_deployment_does_not_hold_is_not_claimed(environment):
    environment([echo("one", "once")])
    deployment = deploy()
    Deployment.objects.filter(pk=deployment.pk).update(status=DeploymentStatus.ROLLING_BACK, claim="the-reapers")

    assert continue_rollback(deployment.pk, "someone-elses") is RunOutcome.NOT_CLAIMED
    deployment.refresh_from_db()
    assert (deployment.status, deployment.claim) == (DeploymentStatus.ROLLING_BACK, "the-reapers")
    assert not StepRun.objects.filter(deployment=deployment).exists()


def test_a_run_whose_claim_is_taken_over_stops_with_claim_lost_and_leaves_the_deployment_alone(environment, settings):
    settings.DEPLOY_HEARTBEAT_SECONDS = 1
    environment([cmd("slow", "import time; time.sleep(3)"), echo("after", "never runs")])
    deployment = deploy()
    outcome: list[RunOutcome] = []

    def worker() -> None:
        try:
            outcome.append(run(deployment.pk))
        finally:
            connection.close()

    thread = threading.Thread(target=worker)
    thread.start()
    deadline = time.monotonic() + 30
    while not StepRun.objects.filter(deployment=deployment, status=StepStatus.RUNNING).exists():
        assert time.monotonic() < deadline, "the slow step never started"
        time.sleep(0.05)
    Deployment.objects.filter(pk=deployment.pk).update(claim="the-reapers")  # as the reaper takes a stale one
    thread.join(timeout=30)

    assert outcome == [RunOutcome.CLAIM_LOST] and outcome[0] is RunOutcome.CLAIM_LOST
    deployment.refresh_from_db()
    assert (deployment.status, deployment.claim) == (DeploymentStatus.RUNNING, "the-reapers")
    assert deployment.finished_at is None
    assert list(StepRun.objects.filter(deployment=deployment).values_list("name", flat=True)) == ["slow"]
    assert not LogLine.objects.filter(deployment=deployment, message="succeeded").exists()


@pytest.mark.parametrize("status", FINISHED)
def test_every_status_a_run_can_finish_in_is_an_outcome_of_the_same_value(status):
    assert RunOutcome(status) == status and RunOutcome(status).name == DeploymentStatus(status).name
