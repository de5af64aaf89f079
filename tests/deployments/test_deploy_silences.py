"""Silences that follow the deploy: the alert rules a pipeline names are silenced while a deployment of it
runs, and the silences end when it ends, whatever the outcome: succeeded, rolled back, cancelled, or
finished by the reaper after its worker died. A local HTTP server stands in for the Slack channel."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from alerting.models import Alert, AlertState, Delivery, DeliveryStatus, Silence
from alerting.services import alert_rules_evaluate, channel_create, rule_create, rule_delete
from controlplane.audit import Actor
from controlplane.models import AuditEvent
from deployments.models import (
    Deployment,
    DeploymentStatus,
    DeploymentType,
    LogLine,
    Pipeline,
    RecoveryPlan,
    StepRun,
    StepStatus,
)
from deployments.runner import run
from deployments.services import (
    InvalidDeployment,
    deployment_cancel,
    deployment_request,
    pipeline_save,
    reap,
    recovery_run,
)
from deployments.silences import rule_names as silenced_rules
from monitoring.models import HealthMetric
from tests.deployments.conftest import cmd, echo, wait_for

pytestmark = [pytest.mark.django_db(transaction=True)]  # the runner closes its connection when it ends
SYSTEM = Actor.system("tests")
UPTIME = "backend up"
LATENCY = "backend slow"


@pytest.fixture
def rules(db):
    """Two check rules of the backend (the uptime check a restart trips, and its latency)."""
    made = {}
    shapes = (
        (UPTIME, {"kind": "check_status", "threshold": 3}),
        (LATENCY, {"kind": "check_latency_ms", "measurement": "responseTime", "threshold": 2000}),
    )
    for name, shape in shapes:
        made[name] = rule_create(
            data={"name": name, "component": "backend", "severity": "critical", **shape}, actor=SYSTEM
        )
    return made


@pytest.fixture
def silencing(environment, rules):
    """silencing(steps, names=[UPTIME]) -> the test environment running ``steps``, silencing ``names``."""

    def make(steps, names=(UPTIME,)):
        env = environment(steps)
        pipeline_save(name=env.pipeline.name, steps=steps, silence_rules=list(names), actor=SYSTEM)
        return env

    return make


def deploy(version: str = "v1") -> Deployment:
    return deployment_request(environment="test", version=version, actor=SYSTEM)


def held(deployment: Deployment) -> list[Silence]:
    return list(Silence.objects.filter(owner=f"deployment:{deployment.pk}").select_related("rule").order_by("pk"))


def in_thread(deployment: Deployment) -> threading.Thread:
    def work() -> None:
        try:
            run(deployment.pk)
        finally:
            connection.close()

    thread = threading.Thread(target=work)
    thread.start()
    return thread


def wait_until(condition, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout} s"
        time.sleep(0.05)


def assert_held_for_the_whole_run(deployment: Deployment, names=(UPTIME,)) -> None:
    """Silences of ``names`` began before the first step and ended after the deployment did, audited."""
    deployment.refresh_from_db()
    silences = held(deployment)
    assert [s.rule.name for s in silences] == list(names)
    steps = StepRun.objects.filter(deployment=deployment)
    first_start = min(run.started_at for run in steps)
    for silence in silences:
        assert silence.starts_at <= first_start
        assert deployment.finished_at <= silence.ends_at <= timezone.now()  # after every step, rollbacks too
        assert silence.reason == f"deployment #{deployment.pk} of {deployment.version} to test is running"
        audited = AuditEvent.objects.filter(
            object_id=str(silence.pk), action__startswith="silence.", actor_label="deployment runner"
        )
        assert sorted(audited.values_list("action", flat=True)) == ["silence.create", "silence.end"]
    messages = list(LogLine.objects.filter(deployment=deployment).values_list("message", flat=True))
    said = f"silenced the alert rules {', '.join(names)} until this deployment ends"
    assert any(message.startswith(said) for message in messages)
    assert f"silences ended: {', '.join(names)}" in messages


def test_silences_are_held_while_a_deployment_runs_and_end_when_it_succeeds(silencing):
    silencing([echo("one", "step one"), echo("two", "step two")], names=[UPTIME, LATENCY])
    deployment = deploy()
    assert held(deployment) == []  # requested, not started: nothing is silenced yet
    assert run(deployment.pk) == DeploymentStatus.SUCCEEDED
    assert_held_for_the_whole_run(deployment, names=(UPTIME, LATENCY))


def test_silences_end_when_a_deployment_fails_and_rolls_back(silencing):
    silencing([echo("one", "step one", rollback=echo("undo", "undoing")), cmd("break", "raise SystemExit(4)")])
    deployment = deploy()
    assert run(deployment.pk) == DeploymentStatus.ROLLED_BACK
    assert_held_for_the_whole_run(deployment)


def test_silences_end_when_a_deployment_is_cancelled(silencing, settings):
    settings.DEPLOY_HEARTBEAT_SECONDS = 1
    silencing([cmd("long", "import time; print('working', flush=True); time.sleep(120)")])
    deployment = deploy()
    thread = in_thread(deployment)
    wait_until(lambda: StepRun.objects.filter(deployment=deployment, status=StepStatus.RUNNING).exists(), "start")
    assert [s.ends_at > timezone.now() for s in held(deployment)] == [True]  # silenced now
    deployment_cancel(deployment=deployment, actor=SYSTEM)
    thread.join(timeout=60)
    deployment.refresh_from_db()
    assert deployment.status == DeploymentStatus.CANCELLED
    assert_held_for_the_whole_run(deployment)


def test_silences_end_when_the_reaper_finishes_a_deployment_whose_worker_died(silencing, worker):
    silencing(
        [
            echo("prepare", "ready", rollback=echo("unprepare", "undone")),
            cmd("long", "import time; print('working', flush=True); time.sleep(120)"),
        ]
    )
    worker_log = worker()
    deployment = deploy()
    wait_until(
        lambda: StepRun.objects.filter(deployment=deployment, name="long", output__contains="working").exists(),
        "the long step's output\n" + (worker_log.read_text() if worker_log.exists() else ""),
        timeout=60,
    )
    deployment.refresh_from_db()
    [silence] = held(deployment)
    assert silence.ends_at > timezone.now()
    os.kill(int(deployment.worker.rsplit(":", 1)[1]), signal.SIGKILL)

    worker()  # a new worker, for the rollback the reaper queues
    assert reap(now=timezone.now() + timedelta(minutes=5))["rolled_back"] == [deployment.pk]
    deployment = wait_for(deployment, timeout=60)
    assert deployment.status == DeploymentStatus.ROLLED_BACK
    assert_held_for_the_whole_run(deployment)


def test_notifications_of_a_silenced_rule_are_suppressed_during_the_deploy_and_sent_after(
    silencing, rules, http_sink, tmp_path
):
    """The uptime rule fires while the deployment runs: recorded, sent nowhere. Once the deployment
    has ended, the next evaluation announces it (the silence, not the rule, kept it quiet)."""
    from flags.services import flag_create

    flag_create(data={"name": "external_alerts", "enabled": True, "rollout_percent": 100}, actor=SYSTEM)
    slack = channel_create(
        data={"name": "ops", "kind": "slack", "url": f"http://127.0.0.1:{http_sink.port}/hook"}, actor=SYSTEM
    )
    rules[UPTIME].channels.set([slack])
    release = tmp_path / "release"
    wait = f"import os, time\nwhile not os.path.exists({str(release)!r}): time.sleep(0.05)"
    silencing([cmd("restart backend", wait)])
    deployment = deploy()  # its run task goes to the broker (no worker here): this test runs it
    thread = in_thread(deployment)
    wait_until(lambda: StepRun.objects.filter(deployment=deployment, status=StepStatus.RUNNING).exists(), "start")
    eager_deliveries()

    clock = timezone.now() - timedelta(seconds=30)
    for offset in range(3):  # the backend's uptime check fails three times running while it restarts
        HealthMetric.objects.create(
            time=clock + timedelta(seconds=offset), component="backend", measurement="uptime", status="fail"
        )
    alert_rules_evaluate()
    alert = Alert.objects.get(rule=rules[UPTIME])
    assert alert.state == AlertState.FIRING
    [delivery] = Delivery.objects.filter(alert=alert)
    assert delivery.status == DeliveryStatus.SKIPPED
    assert f"deployment #{deployment.pk} of v1 to test is running" in delivery.last_error
    assert http_sink.requests == []  # nothing at all reached the channel during the deploy

    release.touch()
    thread.join(timeout=60)
    deployment.refresh_from_db()
    assert deployment.status == DeploymentStatus.SUCCEEDED
    alert_rules_evaluate()  # still failing, and no longer silenced: announced now
    texts = [json.loads(request.body)["text"] for request in http_sink.requests]
    firing = [text for text in texts if text.startswith("[FIRING")]
    assert len(firing) == 1 and firing[0].startswith(f"[FIRING critical] {UPTIME} backend:uptime")
    # The rest is the deployment's own announcement of its end, which no silence holds back.
    assert [text.splitlines()[0] for text in texts if text not in firing] == [
        f"[INFO] deployment #{deployment.pk} test v1: succeeded"
    ]


def test_a_dry_run_and_a_recovery_plan_silence_nothing(silencing, environment):
    env = silencing([echo("one", "step one")])
    dry = deployment_request(environment="test", version="v1", actor=SYSTEM, dry_run=True)
    assert run(dry.pk) == DeploymentStatus.SUCCEEDED
    RecoveryPlan.objects.create(failure_type="app", environment=env, steps=[echo("fix", "fixing")])
    recovery = recovery_run(failure_type="app", actor=SYSTEM)
    assert run(recovery.pk) == DeploymentStatus.SUCCEEDED
    assert not Silence.objects.exists()
    # A guarded flag rollout is watched by its own guards: it silences nothing either, a deploy does.
    env.refresh_from_db()
    assert silenced_rules(Deployment(environment=env, type=DeploymentType.GUARDED, flag="chat")) == []
    assert silenced_rules(Deployment(environment=env, type=DeploymentType.DEPLOY)) == [UPTIME]


def test_a_rule_deleted_after_the_pipeline_was_saved_is_skipped_and_said_so(silencing, rules):
    silencing([echo("one", "step one")], names=[UPTIME, LATENCY])
    rule_delete(rule=rules[LATENCY], actor=SYSTEM)
    deployment = deploy()
    assert run(deployment.pk) == DeploymentStatus.SUCCEEDED
    assert_held_for_the_whole_run(deployment)
    warning = LogLine.objects.get(deployment=deployment, level="warning")
    assert warning.message == f"no alert rule named {LATENCY}: not silenced"


@pytest.mark.parametrize(
    ("names", "field", "message"),
    [
        ([UPTIME, "backend uptime"], "silence_rules[1]", "no alert rule named 'backend uptime' (rules: "),
        ("backend up", "silence_rules", "a JSON list of alert rule names"),
        ([UPTIME, ""], "silence_rules[1]", "must be the name of an alert rule"),
        ([UPTIME, 7], "silence_rules[1]", "must be the name of an alert rule"),
        ([UPTIME, UPTIME], "silence_rules[1]", "'backend up' is named twice"),
    ],
    ids=["unknown", "not-a-list", "empty", "not-a-string", "twice"],
)
def test_bad_silence_rules_are_refused_when_the_pipeline_is_saved(rules, names, field, message):
    pipeline_save(name="quiet", steps=[echo("one", "x")], silence_rules=[LATENCY], actor=SYSTEM)
    with pytest.raises(InvalidDeployment) as raised:
        pipeline_save(name="quiet", steps=[echo("two", "y")], silence_rules=names, actor=SYSTEM)
    assert raised.value.field == field and message in raised.value.message
    pipeline = Pipeline.objects.get(name="quiet")
    assert (pipeline.silence_rules, pipeline.steps[0]["name"]) == ([LATENCY], "one")  # unchanged


def test_the_admin_saves_silence_rules_and_shows_an_unknown_name_on_the_field(rules, operator_client):
    form = {"name": "quiet", "description": "", "steps": json.dumps([echo("one", "x")])}
    response = operator_client.post(
        "/admin/deployments/pipeline/add/", {**form, "silence_rules": json.dumps(["no such rule"])}
    )
    assert response.status_code == 200
    assert "silence_rules[0]: no alert rule named &#x27;no such rule&#x27;" in response.content.decode()
    assert not Pipeline.objects.filter(name="quiet").exists()

    response = operator_client.post("/admin/deployments/pipeline/add/", {**form, "silence_rules": json.dumps([UPTIME])})
    assert response.status_code == 302
    assert Pipeline.objects.get(name="quiet").silence_rules == [UPTIME]
    event = AuditEvent.objects.get(action="pipeline.create")
    assert event.after["silence_rules"] == [UPTIME]


@pytest.fixture(autouse=True)
def _tasks_as_they_were():
    from controlplane.celery import app as celery_app

    before = celery_app.conf.task_always_eager
    yield
    celery_app.conf.task_always_eager = before


def eager_deliveries() -> None:
    """From now on queued tasks (the deliveries) run at once, in the test, as a worker would run them."""
    from controlplane.celery import app as celery_app

    celery_app.conf.task_always_eager = True
