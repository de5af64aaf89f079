"""Deployments run by a real Celery worker (its own queue) on the test database and broker."""

from __future__ import annotations

import time

import pytest

from controlplane.audit import Actor
from deployments.models import FINISHED, Deployment
from deployments.services import environment_save, pipeline_save

SYSTEM = Actor.system("tests")


def cmd(name: str, code: str, **extra):
    """A command step running ``python -c code`` (with {version} etc. as argv[1])."""
    return {"name": name, "kind": "command", "argv": ["{python}", "-c", code, "{version}"], **extra}


def echo(name: str, text: str, **extra):
    return cmd(name, f"print({text!r}, flush=True)", **extra)


@pytest.fixture
def environment(db):
    """environment(steps, name="test") -> an environment running exactly ``steps``."""

    def make(steps, name="test", health_url=""):
        pipeline = pipeline_save(name=f"{name}-pipeline", steps=steps, actor=SYSTEM)
        return environment_save(name=name, pipeline=pipeline, health_url=health_url, actor=SYSTEM)

    return make


@pytest.fixture
def worker(celery_worker_process):
    """worker() starts a real worker; tasks this test queues go to its queue. Returns its log path."""
    from controlplane.celery import app

    before = app.conf.task_default_queue
    started = {}

    def start(**env):
        queue, log = celery_worker_process(DEPLOY_HEARTBEAT_SECONDS="1", DEPLOY_HEARTBEAT_TIMEOUT_SECONDS="5", **env)
        app.conf.task_default_queue = queue
        started["queue"] = queue
        return log

    yield start
    app.conf.task_default_queue = before


def wait_for(deployment: Deployment, *, statuses=FINISHED, timeout: float = 60) -> Deployment:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        deployment.refresh_from_db()
        if deployment.status in statuses:
            return deployment
        time.sleep(0.1)
    raise AssertionError(f"deployment #{deployment.pk} still {deployment.status} after {timeout} s")


def group_alive(pgid: int) -> bool:
    """Whether any live process is in process group ``pgid``. Zombies do not count: where PID 1 is not
    an init that reaps orphans, a killed orphan stays a zombie, yet nothing of it runs."""
    import os

    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()  # noqa: SIM115, PTH123
        except OSError:
            continue
        state, pgrp = fields[0], int(fields[2])
        if pgrp == pgid and state != "Z":
            return True
    return False
