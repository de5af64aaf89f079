"""A deployment requested while the broker is down: accepted, reported as not sent yet, sent again by the
reaper when the broker answers, then run by a worker; or cancelled, saying why, if it never could be."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from datetime import timedelta
from urllib.parse import urlsplit

import pytest
from django.utils import timezone

from controlplane.audit import Actor
from controlplane.celery import app as celery_app
from deployments.models import Deployment, DeploymentStatus, LogLine
from deployments.services import deployment_request, reap
from tests.conftest import free_port, manage, service_url, subprocess_env, test_database_url
from tests.deployments.conftest import echo, wait_for
from tests.faultproxy import FaultProxy

pytestmark = [pytest.mark.django_db(transaction=True)]
SYSTEM = Actor.system("tests")


def post_deploy(base: str, token: str, version: str) -> tuple[int, dict, float]:
    request = urllib.request.Request(
        base + "/api/deployment/deploy",
        data=json.dumps({"environment": "test", "version": version}).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method="POST",
    )
    started = time.monotonic()
    with urllib.request.urlopen(request, timeout=60) as response:
        return response.status, json.loads(response.read()), time.monotonic() - started


@pytest.mark.service("rabbitmq")
def test_a_deploy_while_the_broker_refuses_is_accepted_as_pending_and_runs_once_the_reaper_resends_it(
    environment, make_token, celery_worker_process, gunicorn_server
):
    environment([echo("one", "step one")])
    rabbit = service_url("rabbitmq")
    target = urlsplit(rabbit)
    with FaultProxy(target.hostname or "127.0.0.1", target.port or 5672) as proxy:
        # The worker reaches the broker directly; the web process only through the proxy.
        queue, log = celery_worker_process(CELERY_BROKER_URL=rabbit)
        through_proxy = rabbit.replace(target.netloc, f"{target.netloc.rsplit('@', 1)[0]}@{proxy.address}")
        token = make_token("deploy")  # before the server starts: its token copy then holds it
        base = gunicorn_server(workers=1, CELERY_BROKER_URL=through_proxy, CELERY_QUEUE=queue)
        proxy.refuse()

        status, body, took = post_deploy(base, token, "v7")
        assert status == 202, body
        assert body["dispatched"] is False and body["status"] == "queued"
        assert "not sent to a worker yet" in body["detail"] and "when the broker answers" in body["detail"]
        assert took < 15, f"the request waited {took:.1f} s for the broker"
        deployment = Deployment.objects.get(pk=body["id"])
        assert deployment.dispatched_at is None and "could not reach the broker" in deployment.dispatch_error
        assert LogLine.objects.filter(deployment=deployment, message__contains="could not reach the broker").exists()
        time.sleep(2)  # nothing was sent: the worker, which is up, has nothing to run
        deployment.refresh_from_db()
        assert deployment.status == DeploymentStatus.QUEUED

        proxy.heal()
        # The reaper as beat sends it: a message to the worker, which runs it and sends the deployment.
        with celery_app.connection_for_write(rabbit) as conn:
            celery_app.send_task("deployments.tasks.reap", queue=queue, connection=conn)
        deployment = wait_for(deployment, timeout=60)
        assert deployment.status == DeploymentStatus.SUCCEEDED, (deployment.error, log.read_text())
        assert deployment.dispatched_at is not None and deployment.dispatch_error == ""
        assert LogLine.objects.filter(deployment=deployment, message__startswith="sent to the broker").exists()


def test_manage_py_deploy_says_when_it_could_not_send_the_deployment(environment):
    environment([echo("one", "step one")])
    dead = f"amqp://guest:guest@127.0.0.1:{free_port()}//"  # nothing listens: refused
    result = subprocess.run(
        manage("deploy", "test", "--version", "v8"),
        env=subprocess_env(DATABASE_URL=test_database_url(), CELERY_BROKER_URL=dead),
        capture_output=True,
        text=True,
        timeout=60,
    )
    # Exit 0 as the API's 202: it is accepted and will run; stderr says it is not sent yet.
    assert result.returncode == 0, result.stderr
    deployment = Deployment.objects.get(version="v8")
    assert f"deployment #{deployment.pk}: deploy v8 to test" in result.stdout
    assert f"warning: deployment #{deployment.pk} is queued but not sent to a worker yet" in result.stderr
    assert "could not reach the broker" in result.stderr and "when the broker answers" in result.stderr
    assert deployment.status == DeploymentStatus.QUEUED and deployment.dispatched_at is None


def test_the_reaper_resends_what_was_never_sent_or_never_taken_and_leaves_a_send_in_flight(environment):
    environment([echo("one", "x")], name="a")
    environment([echo("one", "x")], name="b")
    environment([echo("one", "x")], name="c")
    now = timezone.now()
    unsent = deployment_request(environment="a", version="v1", actor=SYSTEM)
    Deployment.objects.filter(pk=unsent.pk).update(dispatched_at=None, dispatch_error="could not reach the broker: x")
    lost = deployment_request(environment="b", version="v1", actor=SYSTEM)
    Deployment.objects.filter(pk=lost.pk).update(dispatched_at=now - timedelta(minutes=2))
    in_flight = deployment_request(environment="c", version="v1", actor=SYSTEM)
    Deployment.objects.filter(pk=in_flight.pk).update(dispatched_at=None)  # its request is sending it now

    assert reap(now=now)["resent"] == [unsent.pk, lost.pk]
    for deployment in (unsent, lost):
        deployment.refresh_from_db()
        assert deployment.dispatched_at is not None and deployment.dispatch_error == ""
    assert LogLine.objects.filter(deployment=unsent, message__contains="the last try failed: could not reach").exists()
    assert LogLine.objects.filter(deployment=lost, message__startswith="no worker took it within 60 s").exists()
    assert Deployment.objects.get(pk=in_flight.pk).dispatched_at is None
    assert reap(now=now)["resent"] == []  # each is sent once per retry interval, not on every round


def test_a_deployment_the_broker_never_took_is_cancelled_in_time_saying_so(environment):
    environment([echo("one", "x")])
    deployment = deployment_request(environment="test", version="v1", actor=SYSTEM)
    Deployment.objects.filter(pk=deployment.pk).update(dispatched_at=None, dispatch_error="could not reach the broker")
    summary = reap(now=timezone.now() + timedelta(hours=1))
    assert summary["cancelled"] == [deployment.pk] and summary["resent"] == []
    deployment.refresh_from_db()
    assert (deployment.status, deployment.error) == ("cancelled", "the broker could not be reached in time")
