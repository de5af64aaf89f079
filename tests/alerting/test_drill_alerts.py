"""A failed restore drill alerts, as a failed backup does: backups sends backup_failed, alerting evaluates
its "backup or verification failed" rule, which sees the drill as drill:<plan>, and tells the channel."""

from __future__ import annotations

import json
import secrets
import sqlite3

import pytest

from alerting.models import Alert, AlertRule, AlertState
from alerting.services import channel_create, rule_update
from backups.drills import drill_create
from backups.models import BackupTarget, DrillStatus
from backups.services import backup_create, backup_verify, target_create
from controlplane.audit import Actor

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("eager_tasks")]
SYSTEM = Actor.system("tests")


@pytest.fixture
def slack(http_sink):
    channel = channel_create(
        data={"name": "ops-slack", "kind": "slack", "url": f"http://127.0.0.1:{http_sink.port}/hook"}, actor=SYSTEM
    )
    rule_update(rule=AlertRule.objects.get(name="backup or verification failed"), changes={"channels": [channel]},
                actor=SYSTEM)  # fmt: skip
    return channel


@pytest.fixture
def crm(tmp_path, monkeypatch, settings):
    """A SQLite target with a verified backup; the default target disabled (its own alerts are not ours)."""
    settings.BACKUP_DIR = tmp_path / "backups"
    settings.BACKUP_TMP_DIR = tmp_path / "partial"
    backend = settings.STORAGES["backups"]
    settings.STORAGES = {
        **settings.STORAGES,
        "backups": {**backend, "OPTIONS": {**backend.get("OPTIONS", {}), "location": str(tmp_path / "backups")}},
    }
    source = tmp_path / "crm.sqlite3"
    with sqlite3.connect(source) as conn:
        conn.execute("CREATE TABLE leads (id INTEGER PRIMARY KEY, email TEXT)")
        conn.execute("INSERT INTO leads (email) VALUES ('a@example.test')")
    variable = f"CRM_{secrets.token_hex(3).upper()}"
    monkeypatch.setenv(variable, f"sqlite:///{source}")
    BackupTarget.objects.filter(name="default").update(enabled=False)
    target = target_create(data={"name": "crm", "url_env": variable}, actor=SYSTEM)
    backup = backup_create(target=target, actor=SYSTEM)
    assert backup_verify(backup=backup, actor=SYSTEM).status == "passed"
    return target


def plan_for(target, queries):
    from deployments.models import Environment, Pipeline, RecoveryPlan

    pipeline = Pipeline.objects.create(name="drill-alerts", steps=[])
    environment = Environment.objects.create(name="drill-alerts", pipeline=pipeline)
    return RecoveryPlan.objects.create(
        failure_type="crm_failure",
        environment=environment,
        steps=[],
        drill_target=target,
        smoke_queries=queries,
    )


def test_a_failing_smoke_query_fails_the_drill_and_the_channel_hears_of_it(
    alerts_on, slack, crm, http_sink, django_capture_on_commit_callbacks
):
    plan = plan_for(crm, ["SELECT email FROM leads WHERE email = 'nobody@example.test'"])

    with django_capture_on_commit_callbacks(execute=True):  # backup_failed, then the evaluation it queues
        drill = drill_create(plan_name=plan.failure_type, actor=SYSTEM)

    assert drill.status == DrillStatus.FAILED and "returned no row" in drill.error
    alert = Alert.objects.get(rule__name="backup or verification failed")
    assert (alert.state, alert.component, alert.measurement) == (AlertState.FIRING, "backups", "drill:crm_failure")
    [request] = http_sink.requests
    text = json.loads(request.body)["text"]
    assert text.startswith("[FIRING critical] backup or verification failed backups:drill:crm_failure")

    # The query fixed, the next drill passes and the alert resolves.
    plan.smoke_queries = ["SELECT email FROM leads"]
    plan.save()
    with django_capture_on_commit_callbacks(execute=True):
        assert drill_create(plan_name=plan.failure_type, actor=SYSTEM).status == DrillStatus.PASSED
    from alerting.services import alert_rules_evaluate

    with django_capture_on_commit_callbacks(execute=True):
        alert_rules_evaluate()
    alert.refresh_from_db()
    assert alert.state == AlertState.RESOLVED
    assert json.loads(http_sink.requests[-1].body)["text"].startswith("[RESOLVED critical]")
