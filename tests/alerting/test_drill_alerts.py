"""A failed restore drill alerts in its own words: backups sends backup_failed, alerting evaluates its
"restore drill failed" rule, which sees the drill as drills:<plan>, and tells the channel which check of
which plan's drill failed and the backup it restored. The backup rule stays quiet."""

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
    for name in ("restore drill failed", "backup or verification failed"):
        rule_update(rule=AlertRule.objects.get(name=name), changes={"channels": [channel]}, actor=SYSTEM)
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
    alert = Alert.objects.get(rule__name="restore drill failed")
    assert (alert.state, alert.component, alert.measurement) == (AlertState.FIRING, "drills", "crm_failure")
    assert not Alert.objects.filter(rule__name="backup or verification failed").exists()
    [request] = http_sink.requests
    text = json.loads(request.body)["text"]
    assert text.startswith("[FIRING critical] restore drill failed drills:crm_failure")
    backup = crm.backups.verified().get()
    assert (
        "The restore drill of recovery plan crm_failure failed at its smoke_1 check: " in text
        and "returned no row" in text
        and f"It restored backup #{backup.pk} of crm, taken {backup.started_at.isoformat()}." in text
    ), text
    assert f"drill: #{drill.pk}" in text and "failed check: smoke_1" in text

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
    resolved = json.loads(http_sink.requests[-1].body)["text"]
    assert resolved.startswith("[RESOLVED critical] restore drill failed drills:crm_failure")
    assert "The restore drill of recovery plan crm_failure no longer fails." in resolved


def test_a_drill_with_no_backup_to_restore_says_so(
    alerts_on, slack, crm, http_sink, django_capture_on_commit_callbacks
):
    crm.backups.all().delete()
    plan = plan_for(crm, ["SELECT email FROM leads"])

    with django_capture_on_commit_callbacks(execute=True):
        drill_create(plan_name=plan.failure_type, actor=SYSTEM)

    [request] = http_sink.requests
    text = json.loads(request.body)["text"]
    assert "failed at its setup check: target crm has no verified backup to restore" in text
    assert "It had no verified backup of crm to restore." in text


def test_the_migration_gives_the_drill_rule_the_backup_rules_channels():
    from importlib import import_module

    from django.apps import apps

    migration = import_module("alerting.migrations.0009_drill_failed_rule")
    channel = channel_create(data={"name": "ops-hook", "kind": "webhook", "url": "http://127.0.0.1:9/x"}, actor=SYSTEM)
    AlertRule.objects.get(name="backup or verification failed").channels.set([channel])
    AlertRule.objects.filter(name="restore drill failed").delete()

    migration.add_drill_rule(apps, None)

    rule = AlertRule.objects.get(name="restore drill failed")
    assert (rule.kind, rule.severity, rule.enabled) == ("drill_failed", "critical", True)
    assert list(rule.channels.all()) == [channel]


def test_an_alert_the_backup_rule_opened_for_a_drill_resolves(alerts_on, crm):
    """Opened before drills had their own rule: nothing reports drill:<plan> to the backup rule now."""
    from alerting.services import alert_rules_evaluate

    rule = AlertRule.objects.get(name="backup or verification failed")
    old = Alert.objects.create(
        rule=rule, dedup_key=f"rule:{rule.pk}:backups:drill:crm_failure", component="backups",
        measurement="drill:crm_failure", state=AlertState.FIRING, last_value=1.0,
    )  # fmt: skip

    alert_rules_evaluate()

    old.refresh_from_db()
    assert old.state == AlertState.RESOLVED
