"""A real Celery worker process consumes a task from a real broker and writes to the test database."""

from __future__ import annotations

import time

import pytest
from django.conf import settings

from controlplane.celery import app as celery_app
from monitoring.models import Heartbeat
from tests.conftest import service_url


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
def test_worker_consumes_heartbeat_from_the_broker(broker, celery_worker_process):
    broker_url = _broker(broker)
    queue, log = celery_worker_process(CELERY_BROKER_URL=broker_url)
    with celery_app.connection_for_write(broker_url) as conn:
        celery_app.send_task("monitoring.tasks.heartbeat", queue=queue, connection=conn)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not Heartbeat.objects.filter(name="celery").exists():
        time.sleep(0.25)
    output = log.read_text()
    assert Heartbeat.objects.filter(name="celery").exists(), f"the worker did not run the task in 60 s:\n{output}"
    deadline = time.monotonic() + 10
    while "succeeded" not in output and time.monotonic() < deadline:  # the log line follows the write
        time.sleep(0.1)
        output = log.read_text()
    assert "monitoring.tasks.heartbeat" in output and "succeeded" in output, output
