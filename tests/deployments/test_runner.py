"""The runner in-process (``deployments.runner.run``): output capped and redacted, failures rolled back,
a failing rollback, notifications to the alert channels and the audit trail."""

from __future__ import annotations

import json

import pytest

from controlplane.audit import Actor
from controlplane.models import AuditEvent
from deployments.models import Deployment, DeploymentStatus, LogLine, Phase, StepRun, StepStatus
from deployments.runner import run
from deployments.services import deployment_request
from tests.deployments.conftest import cmd, echo

pytestmark = [pytest.mark.django_db(transaction=True)]
SYSTEM = Actor.system("tests")
SECRET = "TEST_DEPLOY_API_KEY"
SECRET_VALUE = "key-9d8c7b6a5f4e"


def deploy(version: str = "v1", environment: str = "test") -> Deployment:
    return deployment_request(environment=environment, version=version, actor=SYSTEM)


def runs(deployment: Deployment, phase: str = Phase.FORWARD) -> list[StepRun]:
    return list(StepRun.objects.filter(deployment=deployment, phase=phase).order_by("started_at", "id"))


def test_step_output_keeps_the_tail_up_to_the_limit(environment, settings, api_client):
    settings.DEPLOY_STEP_OUTPUT_LIMIT = 1000
    environment(
        [
            cmd("chatty", "for i in range(3000): print(f'line {i:04}')"),
            echo("quiet", "short and sweet"),
        ]
    )
    deployment = deploy()
    assert run(deployment.pk) == DeploymentStatus.SUCCEEDED
    chatty, quiet = runs(deployment)
    everything = "".join(f"line {i:04}\n" for i in range(3000))
    assert chatty.output_truncated is True
    assert chatty.output == everything[-1000:]  # the tail: the last lines, the first ones dropped
    assert chatty.output.endswith("line 2999\n") and "line 0000" not in chatty.output
    assert (quiet.output, quiet.output_truncated) == ("short and sweet\n", False)
    steps = api_client("deploy").get(f"/api/deployment/deployments/{deployment.pk}").json()["steps"]
    assert [(s["name"], s["outputTruncated"]) for s in steps] == [("chatty", True), ("quiet", False)]


def test_secret_values_never_reach_the_output_the_error_or_the_log(environment, settings, monkeypatch, api_client):
    settings.DEPLOY_SECRETS = [SECRET]
    monkeypatch.setenv(SECRET, SECRET_VALUE)
    environment(
        [
            cmd(
                "print it",
                f"import os; print('the key is', os.environ[{SECRET!r}], flush=True)",
                env={SECRET: "${" + SECRET + "}"},  # a step gets a secret only by naming it
                rollback=cmd("undo", "import sys; print('undoing', sys.argv[1])"),
            ),
            {"name": "broken tool", "kind": "command", "argv": ["/nonexistent/${" + SECRET + "}/deploy"]},
        ]
    )
    deployment = deploy()
    assert run(deployment.pk) == DeploymentStatus.ROLLED_BACK
    deployment.refresh_from_db()
    assert deployment.error == "step broken tool failed: command not found: /nonexistent/[redacted]/deploy"
    assert runs(deployment)[0].output == "the key is [redacted]\n"
    detail = api_client("deploy").get(f"/api/deployment/deployments/{deployment.pk}").content.decode()
    assert "[redacted]" in detail and SECRET_VALUE not in detail
    assert not LogLine.objects.filter(message__contains=SECRET_VALUE).exists()
    assert not StepRun.objects.filter(error__contains=SECRET_VALUE).exists()
    audited = AuditEvent.objects.values_list("before", "after")
    assert audited and not any(SECRET_VALUE in json.dumps(row) for row in audited)


def test_a_command_that_does_not_exist_fails_and_the_earlier_steps_roll_back(environment):
    environment(
        [
            echo("one", "step one", rollback=echo("undo one", "undoing one")),
            echo("two", "step two"),
            {
                "name": "missing",
                "kind": "command",
                "argv": ["/nonexistent/tool"],
                "rollback": echo("undo missing", "u"),
            },
            echo("never", "never runs", rollback=echo("undo never", "never")),
        ]
    )
    deployment = deploy()
    assert run(deployment.pk) == DeploymentStatus.ROLLED_BACK
    deployment.refresh_from_db()
    assert deployment.status == DeploymentStatus.ROLLED_BACK and deployment.finished_at is not None
    assert deployment.error == "step missing failed: command not found: /nonexistent/tool"
    assert [(r.name, r.status, r.exit_code) for r in runs(deployment)] == [
        ("one", "succeeded", 0), ("two", "succeeded", 0), ("missing", "failed", None),
    ]  # fmt: skip
    assert [(r.name, r.status, r.output) for r in runs(deployment, Phase.ROLLBACK)] == [
        ("undo missing", "succeeded", "u\n"),
        ("undo one", "succeeded", "undoing one\n"),
    ]
    messages = list(LogLine.objects.filter(deployment=deployment).values_list("message", flat=True))
    assert "a step failed: rolling back" in messages and messages[-1] == "rolled back"


def test_a_failing_rollback_action_ends_rollback_failed_and_the_others_still_run(environment):
    environment(
        [
            echo("one", "step one", rollback=echo("undo one", "undoing one")),
            echo("two", "step two", rollback=cmd("undo two", "import sys; print('cannot undo'); sys.exit(5)")),
            cmd("three", "import sys; sys.exit(2)"),
        ]
    )
    deployment = deploy()
    assert run(deployment.pk) == DeploymentStatus.ROLLBACK_FAILED
    deployment.refresh_from_db()
    assert deployment.status == DeploymentStatus.ROLLBACK_FAILED
    assert deployment.error.startswith("step three failed: python") and deployment.error.endswith("exited with 2")
    assert [(r.name, r.status, r.exit_code) for r in runs(deployment, Phase.ROLLBACK)] == [
        ("undo two", StepStatus.FAILED, 5),
        ("undo one", StepStatus.SUCCEEDED, 0),
    ]
    last = LogLine.objects.filter(deployment=deployment).last()
    assert (last.level, last.message) == ("error", "rollback failed")
    assert AuditEvent.objects.filter(object_id=str(deployment.pk), action="deployment.rollback_failed").exists()


def test_a_second_run_of_the_same_deployment_does_nothing(environment):
    environment([echo("one", "once")])
    deployment = deploy()
    assert run(deployment.pk) == DeploymentStatus.SUCCEEDED
    assert run(deployment.pk) == "not claimed"
    assert [r.output for r in runs(deployment)] == ["once\n"]


def test_the_alert_channels_hear_that_a_deployment_started_and_rolled_back(environment, http_sink, request):
    from alerting.models import Delivery
    from alerting.services import channel_create
    from flags.services import flag_create

    flag_create(data={"name": "external_alerts", "enabled": True, "rollout_percent": 100}, actor=SYSTEM)
    channel_create(
        data={"name": "deploy-hook", "kind": "webhook", "url": f"http://127.0.0.1:{http_sink.port}/events"},
        actor=SYSTEM,
    )
    environment(
        [
            echo("one", "step one", rollback=echo("undo one", "undoing one")),
            cmd("two", "import sys; sys.exit(1)"),
        ]
    )
    deployment = deploy("v7")  # queued for a worker nobody runs here; the test runs it
    request.getfixturevalue("eager_tasks")
    assert run(deployment.pk) == DeploymentStatus.ROLLED_BACK

    documents = [json.loads(r.body) for r in http_sink.requests]
    assert [r.path for r in http_sink.requests] == ["/events", "/events"]
    assert [(d["event"], d["kind"], d["details"]["status"]) for d in documents] == [
        ("event", "deployment", "running"),
        ("event", "deployment", "rolled_back"),
    ]
    started, ended = documents
    assert started["alert"] == f"deployment #{deployment.pk} test v7: running"
    assert ended["alert"] == f"deployment #{deployment.pk} test v7: rolled back"
    assert ended["details"]["deployment"] == deployment.pk and ended["details"]["version"] == "v7"
    assert ended["details"]["error"].startswith("step two failed: ")
    assert set(Delivery.objects.values_list("status", flat=True)) == {"sent"}


def test_with_external_alerts_off_nothing_is_sent(environment, http_sink, request):
    from alerting.models import Delivery
    from alerting.services import channel_create

    channel_create(
        data={"name": "deploy-hook", "kind": "webhook", "url": f"http://127.0.0.1:{http_sink.port}/events"},
        actor=SYSTEM,
    )
    environment([echo("one", "x")])
    deployment = deploy()
    request.getfixturevalue("eager_tasks")
    assert run(deployment.pk) == DeploymentStatus.SUCCEEDED
    assert http_sink.requests == []
    assert list(Delivery.objects.values_list("status", "last_error")) == [("skipped", "external_alerts is off")] * 2


def test_a_deployment_no_worker_picked_up_is_cancelled_by_the_reaper_and_the_channels_hear_it(
    environment, http_sink, request
):
    from datetime import timedelta

    from django.utils import timezone

    from alerting.services import channel_create
    from deployments.services import reap
    from flags.services import flag_create

    flag_create(data={"name": "external_alerts", "enabled": True, "rollout_percent": 100}, actor=SYSTEM)
    channel_create(
        data={"name": "deploy-hook", "kind": "webhook", "url": f"http://127.0.0.1:{http_sink.port}/events"},
        actor=SYSTEM,
    )
    environment([echo("one", "x")])
    deployment = deploy()
    request.getfixturevalue("eager_tasks")
    assert reap(now=timezone.now() + timedelta(hours=1))["cancelled"] == [deployment.pk]
    deployment.refresh_from_db()
    assert (deployment.status, deployment.error) == ("cancelled", "no worker picked it up in time")
    [received] = http_sink.requests
    document = json.loads(received.body)
    assert document["alert"] == f"deployment #{deployment.pk} test v1: cancelled"
    assert document["details"]["error"] == "no worker picked it up in time"


def test_every_stage_is_audited(environment):
    environment([echo("one", "x", rollback=echo("undo", "y")), cmd("two", "import sys; sys.exit(1)")])
    failed = deploy("v1")
    run(failed.pk)
    environment([echo("one", "x")])
    succeeded = deploy("v2")
    run(succeeded.pk)

    def actions(deployment):
        return list(
            AuditEvent.objects.filter(object_id=str(deployment.pk), action__startswith="deployment.")
            .order_by("id")
            .values_list("action", "actor_label")
        )

    assert actions(failed) == [
        ("deployment.deploy", "tests"),
        ("deployment.started", "deployment runner"),
        ("deployment.rolling_back", "deployment runner"),
        ("deployment.rolled_back", "deployment runner"),
    ]
    assert [a for a, _ in actions(succeeded)] == ["deployment.deploy", "deployment.started", "deployment.succeeded"]
