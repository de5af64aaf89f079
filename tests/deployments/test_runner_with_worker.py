"""Deployments end to end: the API queues, a real worker runs, rolls back, is cancelled, is killed."""

from __future__ import annotations

import os
import signal
import threading
import time
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from controlplane.models import AuditEvent
from deployments.models import Deployment, DeploymentStatus, LogLine, Phase, StepRun, StepStatus
from deployments.services import reap
from tests.deployments.conftest import cmd, echo, group_alive, wait_for

pytestmark = [pytest.mark.django_db(transaction=True)]

ROLLBACKS = [
    echo("one", "step one", rollback=echo("undo one", "undoing one")),
    echo("two", "step two", rollback=echo("undo two", "undoing two")),
    echo("three", "step three"),  # no rollback of its own
    cmd(
        "four",
        "import sys; print('deploying', sys.argv[1], flush=True); sys.exit(3 if sys.argv[1].startswith('bad-') else 0)",
        rollback=echo("undo four", "undoing four"),
    ),
    echo("five", "step five", rollback=echo("undo five", "never runs")),
]


def deploy(api, environment="test", version="v1"):
    return api.post(
        "/api/deployment/deploy", {"environment": environment, "version": version}, content_type="application/json"
    )


def test_a_deployment_succeeds_and_its_output_is_stored(api_client, environment, worker):
    environment(ROLLBACKS)
    worker()
    api = api_client("deploy")
    response = deploy(api, version="v1.2.0")
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["status"] == "queued" and response["Location"] == body["url"]
    deployment = wait_for(Deployment.objects.get(pk=body["id"]))
    assert deployment.status == DeploymentStatus.SUCCEEDED, deployment.error
    runs = list(StepRun.objects.filter(deployment=deployment).order_by("index"))
    assert [(r.name, r.status, r.exit_code) for r in runs] == [
        (name, "succeeded", 0) for name in ("one", "two", "three", "four", "five")
    ]
    assert runs[3].output == "deploying v1.2.0\n"
    detail = api.get(f"/api/deployment/deployments/{deployment.pk}").json()
    assert [s["name"] for s in detail["steps"]] == ["one", "two", "three", "four", "five"]
    assert detail["log"][-1]["message"] == "succeeded"
    actions = set(AuditEvent.objects.filter(object_id=str(deployment.pk)).values_list("action", flat=True))
    assert {"deployment.deploy", "deployment.started", "deployment.succeeded"} <= actions


def test_a_failing_step_rolls_back_the_completed_steps_in_reverse(api_client, environment, worker):
    environment(ROLLBACKS)
    worker()
    deployment = Deployment.objects.get(pk=deploy(api_client("deploy"), version="bad-7").json()["id"])
    deployment = wait_for(deployment)
    assert deployment.status == DeploymentStatus.ROLLED_BACK
    assert "step four failed: " in deployment.error and "exited with 3" in deployment.error
    forward = StepRun.objects.filter(deployment=deployment, phase=Phase.FORWARD).order_by("index")
    assert [(r.name, r.status) for r in forward] == [
        ("one", "succeeded"), ("two", "succeeded"), ("three", "succeeded"), ("four", "failed"),
    ]  # fmt: skip
    assert forward.get(name="four").exit_code == 3
    rollback = StepRun.objects.filter(deployment=deployment, phase=Phase.ROLLBACK).order_by("started_at", "id")
    # The failed step's own rollback first, then the completed steps' in reverse; "three" has none.
    assert [(r.name, r.status, r.output) for r in rollback] == [
        ("undo four", "succeeded", "undoing four\n"),
        ("undo two", "succeeded", "undoing two\n"),
        ("undo one", "succeeded", "undoing one\n"),
    ]
    messages = list(LogLine.objects.filter(deployment=deployment).values_list("message", flat=True))
    assert "a step failed: rolling back" in messages and messages[-1] == "rolled back"


def test_two_requests_at_once_get_one_202_and_one_409(api_client, environment, make_token):
    environment([echo("one", "x")])  # no worker: the first stays queued and holds the lock
    token = make_token("deploy")
    barrier = threading.Barrier(2)
    answers = []

    def request(version):
        client = Client(HTTP_AUTHORIZATION=f"Bearer {token}")
        barrier.wait()
        answers.append(deploy(client, version=version))

    threads = [threading.Thread(target=request, args=(v,)) for v in ("v1", "v2")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    statuses = sorted(r.status_code for r in answers)
    assert statuses == [202, 409], [r.content for r in answers]
    locked = next(r for r in answers if r.status_code == 409).json()
    active = Deployment.objects.get()
    assert locked["active"]["id"] == active.pk and f"locked by deployment #{active.pk}" in locked["detail"]


def test_cancel_during_a_long_step_kills_it_and_rolls_back(api_client, environment, worker):
    environment(
        [
            echo("prepare", "ready", rollback=echo("unprepare", "undone")),
            cmd("long", "import time; print('working', flush=True); time.sleep(60)"),
        ]
    )
    worker()
    api = api_client("deploy")
    deployment = Deployment.objects.get(pk=deploy(api).json()["id"])
    deadline = time.monotonic() + 30
    while not StepRun.objects.filter(deployment=deployment, name="long", output__contains="working").exists():
        assert time.monotonic() < deadline, "the long step never printed"
        time.sleep(0.1)
    pid = StepRun.objects.get(deployment=deployment, name="long").pid
    started = time.monotonic()
    assert api.post(f"/api/deployment/deployments/{deployment.pk}/cancel").status_code == 202
    deployment = wait_for(deployment, timeout=30)
    assert time.monotonic() - started < 15
    assert deployment.status == DeploymentStatus.CANCELLED
    long = StepRun.objects.get(deployment=deployment, name="long")
    assert long.status == StepStatus.FAILED and "cancelled by an operator" in long.error
    assert StepRun.objects.get(deployment=deployment, phase=Phase.ROLLBACK).name == "unprepare"
    assert not group_alive(pid)  # the step's whole process group is gone
    assert api.post(f"/api/deployment/deployments/{deployment.pk}/cancel").status_code == 409


def test_a_worker_killed_mid_step_is_reaped_and_the_rollback_finishes(api_client, environment, worker):
    environment(
        [
            echo("prepare", "ready", rollback=echo("unprepare", "undone")),
            cmd("long", "import time; print('working', flush=True); time.sleep(120)"),
        ]
    )
    worker_log = worker()
    deployment = Deployment.objects.get(pk=deploy(api_client("deploy")).json()["id"])
    deadline = time.monotonic() + 30
    while not StepRun.objects.filter(deployment=deployment, name="long", output__contains="working").exists():
        assert time.monotonic() < deadline, "the long step never printed:\n" + worker_log.read_text()
        time.sleep(0.1)
    deployment.refresh_from_db()
    worker_pid = int(deployment.worker.rsplit(":", 1)[1])
    os.kill(worker_pid, signal.SIGKILL)
    step_pid = StepRun.objects.get(deployment=deployment, name="long").pid

    # Nothing has happened yet: the heartbeat is simply not fresh. The reaper looks later.
    assert reap(now=timezone.now())["rolled_back"] == []
    worker()  # a new worker, for the rollback the reaper queues
    summary = reap(now=timezone.now() + timedelta(minutes=5))
    assert summary["rolled_back"] == [deployment.pk]
    deployment = wait_for(deployment, timeout=60)
    assert deployment.status == DeploymentStatus.ROLLED_BACK
    assert "worker lost during long" in deployment.error
    long = StepRun.objects.get(deployment=deployment, name="long")
    assert long.status == StepStatus.FAILED and long.error == "worker lost"
    assert StepRun.objects.get(deployment=deployment, phase=Phase.ROLLBACK).status == StepStatus.SUCCEEDED
    assert not group_alive(step_pid)  # the orphaned step was killed by the reaper (same host)
    assert reap(now=timezone.now() + timedelta(minutes=10)) == {
        "rolled_back": [],
        "cancelled": [],
        "continued": [],
        "resent": [],
    }
