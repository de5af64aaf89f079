"""What "the previous release" is, with deployments really run (as the README's demo runs them): a deploy
that failed and was rolled back never became one; a succeeded rollback is one."""

from __future__ import annotations

import pytest

from controlplane.audit import Actor
from deployments.models import Deployment
from deployments.runner import RunOutcome, run
from deployments.services import InvalidDeployment, deployment_request, rollback_to_previous
from tests.deployments.conftest import cmd

SYSTEM = Actor.system("tests")
# Like the demo's backend step: a version starting with "bad-" fails, and its rollback action runs.
STEPS = [
    cmd(
        "backend deploy",
        "import sys; sys.exit(1 if sys.argv[1].startswith('bad-') else 0)",
        rollback=cmd("backend rollback", "print('back')"),
    )
]


def deploy(version: str) -> str:
    return run(deployment_request(environment="test", version=version, actor=SYSTEM).pk)


def roll_back() -> Deployment:
    deployment = rollback_to_previous(environment="test", actor=SYSTEM)
    assert run(deployment.pk) is RunOutcome.SUCCEEDED
    return deployment


@pytest.mark.django_db(transaction=True)
def test_the_readmes_sequence_rolls_back_from_v2_to_v1_and_a_second_rollback_returns_to_v2(environment):
    environment(STEPS)
    assert [deploy("v1"), deploy("v2"), deploy("bad-3")] == ["succeeded", "succeeded", "rolled_back"]
    assert roll_back().version == "v1"  # bad-3 never ran: v2 was current, v1 the one before
    assert roll_back().version == "v2"  # the rollback to v1 is a release: undoing it returns to v2


@pytest.mark.django_db(transaction=True)
def test_after_one_release_and_a_failed_deploy_the_refusal_says_why_the_failed_one_does_not_count(environment):
    environment(STEPS)
    assert [deploy("v1"), deploy("bad-2")] == ["succeeded", "rolled_back"]
    with pytest.raises(InvalidDeployment) as refused:
        rollback_to_previous(environment="test", actor=SYSTEM)
    assert refused.value.field == "environment"
    assert refused.value.message == (
        "test has only ever run v1: no previous release (bad-2 ended rolled_back, so it never became a release)"
    )
    assert not Deployment.objects.filter(type="rollback").exists()

    deploy("v1")  # the newest deploy succeeded: nothing failed to explain
    with pytest.raises(InvalidDeployment) as refused:
        rollback_to_previous(environment="test", actor=SYSTEM)
    assert refused.value.message == "test has only ever run v1: no previous release"
