"""Monitoring reads the backups: a failed backup alerts at once, a stale one by its age; the check says why."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from alerting.models import Alert, AlertRule, AlertState
from alerting.services import alert_rules_evaluate, channel_create, rule_update
from backups.models import Backup, BackupStatus, BackupTarget, VerificationResult
from backups.services import backup_create, target_create
from controlplane.audit import Actor
from controlplane.models import AuditEvent
from monitoring.checks import FAIL, PASS, WARN, check_backup_age

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("eager_tasks")]
SYSTEM = Actor.system("tests")


@pytest.fixture
def slack(http_sink):
    channel = channel_create(
        data={"name": "ops-slack", "kind": "slack", "url": f"http://127.0.0.1:{http_sink.port}/hook"}, actor=SYSTEM
    )
    for name in ("backup or verification failed", "latest verified backup older than 26 hours"):
        rule_update(rule=AlertRule.objects.get(name=name), changes={"channels": [channel]}, actor=SYSTEM)
    return channel


@pytest.fixture
def evaluate(django_capture_on_commit_callbacks):
    def run(now=None):
        with django_capture_on_commit_callbacks(execute=True):
            return alert_rules_evaluate(now)

    return run


@pytest.fixture
def broken_target(monkeypatch):
    """A target whose URL variable is not set: every backup of it fails with a clear message."""
    monkeypatch.delenv("CRM_DATABASE_URL", raising=False)
    BackupTarget.objects.filter(name="default").update(enabled=False)
    return target_create(data={"name": "crm", "url_env": "CRM_DATABASE_URL"}, actor=SYSTEM)


def texts(sink):
    return [json.loads(r.body)["text"] for r in sink.requests]


def test_a_failed_backup_fires_an_alert_for_its_target_and_a_good_one_resolves_it(
    alerts_on, slack, broken_target, evaluate, http_sink, tmp_path, monkeypatch, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False) as queued:
        backup = backup_create(target=broken_target, actor=SYSTEM)
    assert backup.status == BackupStatus.FAILED
    assert "CRM_DATABASE_URL is not set" in backup.error
    assert AuditEvent.objects.filter(action="backup.failed", object_id=str(backup.pk)).exists()
    assert queued, "the failure queues an alert evaluation right away"

    evaluate()
    alert = Alert.objects.get(rule__name="backup or verification failed")
    assert (alert.state, alert.component, alert.measurement) == (AlertState.FIRING, "backups", "crm")
    [text] = texts(http_sink)
    assert text.startswith("[FIRING critical] backup or verification failed")

    # The variable is set now (a SQLite file) and the next backup works: the alert resolves.
    source = tmp_path / "crm.sqlite3"
    import sqlite3

    with sqlite3.connect(source) as conn:
        conn.execute("CREATE TABLE leads (id INTEGER PRIMARY KEY, email TEXT)")
        conn.execute("INSERT INTO leads (email) VALUES ('a@example.test')")
    monkeypatch.setenv("CRM_DATABASE_URL", f"sqlite:///{source}")
    assert backup_create(target=broken_target, actor=SYSTEM).status == BackupStatus.SUCCEEDED
    evaluate()
    alert.refresh_from_db()
    assert alert.state == AlertState.RESOLVED
    assert texts(http_sink)[-1].startswith("[RESOLVED critical]")


def test_a_failed_backup_alerts_once_it_commits_through_the_backup_failed_signal(
    alerts_on, broken_target, django_capture_on_commit_callbacks
):
    """backups imports no alerting: it sends backups.signals.backup_failed, which alerting connects
    (apps.py) to an evaluation of the rules, queued at once (run here in the test, as a worker would)."""
    from backups.signals import backup_failed

    assert any("evaluate_soon" in repr(receiver) for _, receiver, *_ in backup_failed.receivers)
    with django_capture_on_commit_callbacks(execute=True):
        backup = backup_create(target=broken_target, actor=SYSTEM)
    assert backup.status == BackupStatus.FAILED
    alert = Alert.objects.get(rule__name="backup or verification failed")
    assert (alert.state, alert.component, alert.measurement) == (AlertState.FIRING, "backups", "crm")


def test_a_listener_that_fails_leaves_the_failure_recorded(broken_target, django_capture_on_commit_callbacks, caplog):
    from backups.signals import backup_failed

    heard = []

    def broken_listener(sender, **kwargs):
        heard.append(sender)
        raise RuntimeError("listener down")

    backup_failed.connect(broken_listener)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            backup = backup_create(target=broken_target, actor=SYSTEM)
    finally:
        backup_failed.disconnect(broken_listener)
    assert heard == [Backup]
    assert Backup.objects.get(pk=backup.pk).status == BackupStatus.FAILED
    assert "listener down" in caplog.text


def test_a_target_without_a_verified_backup_alerts_once_it_is_older_than_the_threshold(alerts_on, slack, evaluate):
    target = BackupTarget.objects.get(name="default")
    now = timezone.now()
    evaluate(now)
    assert not Alert.objects.filter(rule__name__startswith="latest verified backup").exists()
    BackupTarget.objects.filter(pk=target.pk).update(created_at=now - timedelta(hours=30))
    evaluate(now)
    alert = Alert.objects.get(rule__name="latest verified backup older than 26 hours")
    assert alert.state == AlertState.FIRING and alert.last_value == pytest.approx(30, abs=0.1)

    # A verified backup from 2 hours ago brings the age under the threshold.
    Backup.objects.create(
        target=target,
        status=BackupStatus.SUCCEEDED,
        engine="sqlite",
        started_at=now - timedelta(hours=2),
        verification=VerificationResult.PASSED,
        verified_at=now - timedelta(hours=1),
    )
    evaluate(now)
    alert.refresh_from_db()
    assert alert.state == AlertState.RESOLVED and alert.last_value == pytest.approx(2, abs=0.1)


def test_the_backups_check_reads_recovery_readiness():
    target = BackupTarget.objects.get(name="default")
    now = timezone.now()
    outcome = check_backup_age()
    # New, not late yet: within its RPO nothing is at risk (a fresh install is healthy).
    assert outcome.status == PASS and "default: no verified backup yet, within its RPO until" in outcome.output

    BackupTarget.objects.filter(pk=target.pk).update(created_at=now - timedelta(days=10))
    outcome = check_backup_age()
    assert outcome.status == FAIL and "default: no verified backup" in outcome.output

    for days in range(7):
        Backup.objects.create(
            target=target,
            status=BackupStatus.SUCCEEDED,
            engine="sqlite",
            started_at=now - timedelta(days=days),  # one per day of the 7-day window, today's now
            verification=VerificationResult.PASSED,
        )
    outcome = check_backup_age()
    assert outcome.status == PASS and outcome.value == pytest.approx(0, abs=0.01)

    Backup.objects.filter(target=target, started_at__lte=now - timedelta(days=3)).update(
        verification=VerificationResult.FAILED
    )
    outcome = check_backup_age()
    # Days 3 to 6 back have no verified backup any more.
    assert outcome.status == WARN and "4 day(s) of the 7-day window unverified" in outcome.output
