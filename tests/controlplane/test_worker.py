"""A real Celery worker process consumes a task from a real broker and writes to the test database."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid

import pytest
from django.conf import settings

from controlplane.celery import app as celery_app
from monitoring.models import Heartbeat
from tests.conftest import BASE_DIR, service_url, subprocess_env, test_database_url


def _broker(kind: str) -> str:
    return settings.CELERY_BROKER_URL if kind == "configured" else service_url(kind)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "broker",
    [
        "configured",
        pytest.param("rabbitmq", marks=pytest.mark.service("rabbitmq")),
        pytest.param("redis", marks=pytest.mark.service("redis")),
    ],
)
def test_worker_consumes_heartbeat_from_the_broker(broker, tmp_path):
    broker_url = _broker(broker)
    log = tmp_path / "worker.log"
    queue = f"test-{uuid.uuid4().hex[:12]}"  # a queue of its own: no other worker can take the message
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "controlplane",
            "worker",
            "--pool",
            "solo",
            "-Q",
            queue,
            "--loglevel",
            "INFO",
            "--without-heartbeat",
            "--without-gossip",
            "--without-mingle",
        ],
        cwd=BASE_DIR,
        env=subprocess_env(DATABASE_URL=test_database_url(), CELERY_BROKER_URL=broker_url),
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    try:
        with celery_app.connection_for_write(broker_url) as conn:
            celery_app.send_task("monitoring.tasks.heartbeat", queue=queue, connection=conn)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not Heartbeat.objects.filter(name="celery").exists():
            assert worker.poll() is None, log.read_text()
            time.sleep(0.25)
        assert Heartbeat.objects.filter(name="celery").exists(), "the worker did not run the task within 60 s"
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    output = log.read_text()
    assert "monitoring.tasks.heartbeat" in output and "succeeded" in output, output
