"""A backup or verification an operator asks for while the broker is down: the page says it is not sent
yet, the target or backup records it, and run_due sends it when the broker answers; a worker runs it."""

from __future__ import annotations

import time
from urllib.parse import urlsplit

import pytest

from backups.models import Backup, BackupStatus, BackupTarget, VerificationResult
from backups.services import backup_create
from backups.tasks import run_due
from controlplane.celery import app as celery_app
from tests.backups.conftest import SYSTEM
from tests.conftest import service_url
from tests.faultproxy import FaultProxy

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.service("rabbitmq")]


def _use_broker(url: str | None, queue: str) -> None:
    # Sends go to broker_write_url; broker_url itself yields to a CELERY_BROKER_URL in the environment
    # (CI's service round sets one), so the write URL is what points this process at the proxy.
    celery_app.conf.broker_write_url = url
    celery_app.conf.task_default_queue = queue
    # Celery keeps the pool (for the old URL) and the producers made from it; forgetting both makes
    # the next send connect to ``url``. No public call does only this.
    celery_app._pool = None
    del celery_app.amqp


@pytest.fixture
def this_process_sends_to():
    """this_process_sends_to(url, queue): tasks this test process sends go there; restored after."""
    before = (celery_app.conf.get("broker_write_url"), celery_app.conf.task_default_queue)
    yield _use_broker
    _use_broker(*before)


def test_requests_made_while_the_broker_refuses_are_sent_again_by_run_due_and_a_worker_runs_them(
    sqlite_source, backup_dirs, operator_client, celery_worker_process, this_process_sends_to
):
    BackupTarget.objects.exclude(pk=sqlite_source.target.pk).update(enabled=False)  # no other schedule
    target = sqlite_source.target
    earlier = backup_create(target=target, actor=SYSTEM)  # finished, to be verified
    rabbit = service_url("rabbitmq")
    parts = urlsplit(rabbit)
    with FaultProxy(parts.hostname or "127.0.0.1", parts.port or 5672) as proxy:
        queue, log = celery_worker_process(
            CELERY_BROKER_URL=rabbit,  # the worker reaches the broker directly; this process through the proxy
            BACKUP_DIR=str(backup_dirs.backups),
            BACKUP_TMP_DIR=str(backup_dirs.partial),
            BACKUP_SCRATCH_DATABASE_URL="",
            PG_BIN_DIR="",
        )
        this_process_sends_to(rabbit.replace(parts.netloc, f"{parts.netloc.rsplit('@', 1)[0]}@{proxy.address}"), queue)
        proxy.refuse()

        page = operator_client.post(f"/backups/{target.name}/backup", follow=True)
        assert page.status_code == 200
        assert f"Backup of {target.name} requested, but the broker could not be reached" in page.content.decode()
        page = operator_client.post(f"/backups/{target.name}/{earlier.pk}/verify", follow=True)
        assert f"Verification of backup #{earlier.pk} requested, but the broker" in page.content.decode()
        target.refresh_from_db()
        earlier.refresh_from_db()
        assert target.dispatch_error.startswith("could not reach the broker") and target.dispatch_requested_by
        assert earlier.verify_dispatch_error.startswith("could not reach the broker") and earlier.verify_requested_by
        assert run_due()["resent"] == []  # still refused: kept for the next round

        proxy.heal()
        summary = run_due()
        assert summary["resent"] == [f"backup of {target.name}", f"verification of backup #{earlier.pk}"]
        target.refresh_from_db()
        earlier.refresh_from_db()
        assert (target.dispatch_error, earlier.verify_dispatch_error) == ("", "")

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            earlier.refresh_from_db()
            taken = Backup.objects.filter(target=target, status=BackupStatus.SUCCEEDED).count()
            if taken == 2 and earlier.verification == VerificationResult.PASSED:
                break
            time.sleep(0.25)
        assert (taken, earlier.verification) == (2, VerificationResult.PASSED), log.read_text()
