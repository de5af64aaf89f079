"""A job monitor that is down alerts through the channels, and its next good ping resolves the alert."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from alerting.models import Alert, AlertRule, AlertState
from alerting.services import alert_rules_evaluate, channel_create, rule_update
from controlplane.audit import Actor
from monitoring.job_monitors import job_monitors_sweep
from monitoring.models import JobMonitor, JobState

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("eager_tasks")]
SYSTEM = Actor.system("tests")
RULE = "job monitor down"


@pytest.fixture
def slack(http_sink):
    channel = channel_create(
        data={"name": "ops-slack", "kind": "slack", "url": f"http://127.0.0.1:{http_sink.port}/hook"}, actor=SYSTEM
    )
    rule_update(rule=AlertRule.objects.get(name=RULE), changes={"channels": [channel]}, actor=SYSTEM)
    return channel


@pytest.fixture
def evaluate(django_capture_on_commit_callbacks):
    def run(now=None):
        with django_capture_on_commit_callbacks(execute=True):
            return alert_rules_evaluate(now)

    return run


def texts(sink) -> list[str]:
    return [json.loads(r.body)["text"] for r in sink.requests]


def test_the_job_down_rule_ships_with_the_migrations() -> None:
    rule = AlertRule.objects.get(name=RULE)
    assert rule.kind == "job_down" and rule.enabled and rule.severity == "critical"


def test_a_failed_job_fires_and_its_next_success_resolves(alerts_on, slack, evaluate, http_sink) -> None:
    client = Client()
    digest = JobMonitor.objects.create(name=f"weekly-digest-{uuid.uuid4().hex[:6]}", period_seconds=7 * 86400)
    reminders = JobMonitor.objects.create(name=f"reminders-{uuid.uuid4().hex[:6]}", period_seconds=3600)
    client.get(digest.ping_path())
    client.get(reminders.ping_path())
    evaluate()
    assert not Alert.objects.filter(rule__name=RULE).exists() and http_sink.requests == []

    assert client.post(digest.ping_path() + "/1", data=b"SMTP refused", content_type="text/plain").status_code == 200
    evaluate()
    alert = Alert.objects.get(rule__name=RULE)
    assert (alert.state, alert.component, alert.measurement) == (AlertState.FIRING, "jobs", digest.name)
    [text] = texts(http_sink)
    assert text.startswith(f"[FIRING critical] {RULE}") and digest.name in text

    client.get(digest.ping_path())
    evaluate()
    alert.refresh_from_db()
    assert alert.state == AlertState.RESOLVED
    assert texts(http_sink)[-1].startswith(f"[RESOLVED critical] {RULE}")
    assert Alert.objects.filter(rule__name=RULE).count() == 1  # the healthy monitor never alerted


def test_a_missed_ping_fires_once_beat_marks_it_down_and_a_paused_monitor_resolves(
    alerts_on, slack, evaluate, http_sink
) -> None:
    pinged = timezone.now() - timedelta(hours=2)
    job = JobMonitor.objects.create(
        name=f"nightly-{uuid.uuid4().hex[:6]}", period_seconds=3600, grace_seconds=600, state=JobState.UP,
        last_ping=pinged,
    )  # fmt: skip
    evaluate()
    assert not Alert.objects.filter(rule__name=RULE).exists()  # up until beat's sweep says otherwise
    job_monitors_sweep()
    assert JobMonitor.objects.get(pk=job.pk).state == JobState.DOWN
    evaluate()
    alert = Alert.objects.get(rule__name=RULE, measurement=job.name)
    assert alert.state == AlertState.FIRING and len(http_sink.requests) == 1

    JobMonitor.objects.filter(pk=job.pk).update(state=JobState.PAUSED)
    evaluate()
    alert.refresh_from_db()
    assert alert.state == AlertState.RESOLVED


def test_a_deleted_monitor_resolves_its_alert(alerts_on, evaluate) -> None:
    job = JobMonitor.objects.create(name=f"gone-{uuid.uuid4().hex[:6]}", state=JobState.DOWN)
    evaluate()
    alert = Alert.objects.get(rule__name=RULE, measurement=job.name)
    assert alert.state == AlertState.FIRING
    job.delete()
    evaluate()
    alert.refresh_from_db()
    assert alert.state == AlertState.RESOLVED
