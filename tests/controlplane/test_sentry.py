"""Sentry, with a local HTTP server on 127.0.0.1 as the DSN: what arrives there, and what does not."""

from __future__ import annotations

import json
import logging
import subprocess
import time

import pytest
import sentry_sdk
from django.test import Client

from controlplane.context import request_id_var
from controlplane.sentry import init_sentry
from tests.conftest import free_port, manage, subprocess_env

pytestmark = pytest.mark.django_db


def events(sink) -> list[dict]:
    found = []
    for request in sink.requests:
        found.extend(item for item in request.envelope_items() if "exception" in item or "message" in item)
    return found


@pytest.fixture
def sentry(http_sink, settings):
    settings.ROOT_URLCONF = "tests.controlplane.urls_faulty"
    dsn = f"http://publickey@127.0.0.1:{http_sink.port}/7"
    init_sentry(dsn=dsn, environment="test-env", release="cp@1.2.3", traces_sample_rate=0)
    yield http_sink
    sentry_sdk.flush(timeout=2)
    sentry_sdk.init()  # no DSN: reporting off again for the rest of the suite


def test_view_exception_arrives_with_request_id_release_and_environment(sentry):
    client = Client(raise_request_exception=False)
    response = client.get("/test/boom/", HTTP_X_REQUEST_ID="req-sentry-1")
    assert response.status_code == 500
    sentry_sdk.flush(timeout=5)
    sentry.wait_for(lambda r: "envelope" in r.path)
    [event] = events(sentry)
    assert event["exception"]["values"][-1]["type"] == "RuntimeError"
    assert event["tags"]["request_id"] == "req-sentry-1"
    assert event["environment"] == "test-env" and event["release"] == "cp@1.2.3"
    # The token in the message is scrubbed before it leaves.
    assert "cpt_ZZZZ" not in json.dumps(event)


def test_noise_is_dropped(sentry):
    client = Client(raise_request_exception=False)
    client.get("/accounts/login/", HTTP_HOST="evil.example.test")  # DisallowedHost
    client.get("/health/boom/")
    sentry_sdk.flush(timeout=5)
    time.sleep(0.3)
    assert events(sentry) == []


def test_a_dsn_that_does_not_answer_drops_the_event_with_one_log_line(settings, caplog):
    settings.ROOT_URLCONF = "tests.controlplane.urls_faulty"
    errors_logger = logging.getLogger("sentry_sdk.errors")
    errors_logger.addHandler(caplog.handler)
    init_sentry(dsn="http://publickey@127.0.0.1:9/7", environment="test", release="", traces_sample_rate=0)
    try:
        response = Client().get("/test/log-error/")
        assert response.status_code == 200 and response.content == b"ok"
        sentry_sdk.flush(timeout=5)
    finally:
        sentry_sdk.init()
        errors_logger.removeHandler(caplog.handler)
    dropped = [r for r in caplog.records if r.name == "sentry_sdk.errors"]
    assert len(dropped) == 1, [r.getMessage() for r in dropped]
    assert dropped[0].getMessage().startswith("Sentry event dropped") and dropped[0].exc_info is None


@pytest.mark.django_db(transaction=True)
def test_task_exception_in_a_real_worker_arrives_with_the_senders_request_id(http_sink, celery_worker_process):
    """The worker runs with SENTRY_DSN pointing at the local server; the request id travels in the message."""
    from controlplane.celery import app as celery_app

    queue, log = celery_worker_process(
        SENTRY_DSN=f"http://publickey@127.0.0.1:{http_sink.port}/7", SENTRY_ENVIRONMENT="worker-env", LOG_FORMAT="json"
    )
    reset = request_id_var.set("req-from-web-42")
    try:
        with celery_app.connection_for_write() as conn:
            celery_app.send_task("controlplane.tasks.sentry_check", queue=queue, connection=conn)
    finally:
        request_id_var.reset(reset)
    arrived = http_sink.wait_for(lambda r: b"SentryCheckError" in r.body, seconds=60)
    assert arrived, log.read_text()
    [event] = [e for r in arrived for e in r.envelope_items() if "exception" in e]
    assert event["tags"]["request_id"] == "req-from-web-42"
    assert event["environment"] == "worker-env"
    # The worker's own log line for the task carries the same request id, task name and id.
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    task_lines = [line for line in lines if line.get("task_name") == "controlplane.tasks.sentry_check"]
    assert task_lines and all(line["request_id"] == "req-from-web-42" for line in task_lines)
    assert all(line.get("task_id") for line in task_lines)


def test_sentry_check_command_needs_a_dsn(tmp_path):
    result = subprocess.run(
        manage("sentry_check"),
        env=subprocess_env(CONTROLPLANE_VAR_DIR=str(tmp_path), SENTRY_DSN=None),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0 and "SENTRY_DSN is not set" in result.stderr


def test_a_dsn_that_does_not_answer_in_a_real_process_is_one_line(tmp_path):
    """As a server process starts: Sentry initialised by the settings, before logging is configured."""
    port = free_port()  # nothing listens there
    env = subprocess_env(
        CONTROLPLANE_VAR_DIR=str(tmp_path),
        DATABASE_URL=None,
        REDIS_URL=None,
        CELERY_BROKER_URL=None,
        LOG_FORMAT="json",
        LOG_LEVEL="INFO",
        SENTRY_DSN=f"http://publickey123@127.0.0.1:{port}/7",
    )
    script = "import logging; logging.getLogger('controlplane.probe').error('something broke')"
    result = subprocess.run(manage("shell", "-c", script), env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in (result.stdout + result.stderr).splitlines() if line.startswith("{")]
    assert [line["message"] for line in lines if line["logger"] == "controlplane.probe"] == ["something broke"]
    dropped = [line for line in lines if line["logger"] == "sentry_sdk.errors"]
    assert len(dropped) == 1 and dropped[0]["message"].startswith("Sentry event dropped:")
    assert "Retrying" not in result.stdout + result.stderr and "Traceback" not in result.stdout + result.stderr
