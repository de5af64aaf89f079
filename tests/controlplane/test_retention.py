"""Retention: every growing table loses what is older than its setting, in batches; newer rows stay."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from alerting.models import Alert, AlertRule, AlertState, Delivery, DeliveryStatus, NotificationChannel
from controlplane.audit import Actor, audit_record
from controlplane.models import AuditEvent
from controlplane.models import Environment as ControlEnvironment
from controlplane.retention import prune, rules
from controlplane.tasks import prune_old_rows
from deployments.models import Deployment, Environment, LogLine, Pipeline, StepRun
from flags.models import FlagUsage, SdkInstance
from monitoring.models import HealthMetric, RequestRollup, Service, ServiceHour, ServiceMinute, SignalSample

pytestmark = pytest.mark.django_db


def test_every_rule_names_a_setting_in_env_example(settings):
    from tests.controlplane.test_env_example import documented

    for rule in rules():
        assert hasattr(settings, rule.setting) and rule.setting in documented()


def test_old_rows_go_in_batches_new_ones_and_unfinished_ones_stay(settings):
    now = timezone.now()
    old, recent = now - timedelta(days=400), now - timedelta(days=1)
    HealthMetric.objects.bulk_create(
        [HealthMetric(time=old, component="database", measurement="responseTime", status="pass") for _ in range(25)]
        + [HealthMetric(time=recent, component="database", measurement="responseTime", status="pass")]
    )
    RequestRollup.objects.bulk_create(
        [RequestRollup(minute=old - timedelta(minutes=i), view="v", method="GET", status_class="2xx") for i in range(7)]
        + [RequestRollup(minute=recent, view="v", method="GET", status_class="2xx")]
    )
    channel = NotificationChannel.objects.create(name="hook", kind="webhook", url="http://127.0.0.1:9/x")
    rule = AlertRule.objects.create(name="r", kind="error_rate", threshold=1)
    gone = Alert.objects.create(rule=rule, dedup_key="a", state=AlertState.RESOLVED, resolved_at=old)
    Alert.objects.create(rule=rule, dedup_key="b", state=AlertState.FIRING, started_at=old)  # still open: stays
    Delivery.objects.create(alert=gone, channel=channel, event="firing", status=DeliveryStatus.SENT, created_at=old)
    Delivery.objects.create(channel=channel, event="test", status=DeliveryStatus.PENDING, created_at=old)  # stays
    pipeline = Pipeline.objects.create(name="p", steps=[])
    env = Environment.objects.create(name="e", pipeline=pipeline)
    done = Deployment.objects.create(environment=env, version="v1", status="succeeded", requested_by="t")
    LogLine.objects.create(deployment=done, time=old, message="old")
    LogLine.objects.create(deployment=done, time=recent, message="recent")
    StepRun.objects.create(deployment=done, index=0, name="s", kind="command", started_at=old, status="succeeded")
    audit_record(actor=Actor.system("t"), action="old.thing")
    AuditEvent.objects.update(time=old)
    service = Service.objects.create(name="backend")
    ServiceMinute.objects.bulk_create(
        [ServiceMinute(service=service, minute=old - timedelta(minutes=i)) for i in range(2)]
        + [ServiceMinute(service=service, minute=recent)]
    )
    ServiceHour.objects.bulk_create(
        [ServiceHour(service=service, hour=now - timedelta(days=401)), ServiceHour(service=service, hour=recent)]
    )
    SignalSample.objects.create(service=service, at=old, signal="up", value=1)
    production = ControlEnvironment.objects.ensure("production")
    FlagUsage.objects.bulk_create(
        [FlagUsage(flag=f"f{i}", environment=production, hour=old) for i in range(5)]
        + [FlagUsage(flag="f0", environment=production, hour=recent)]
    )
    SdkInstance.objects.create(environment=production, app_name="a", instance_id="gone", last_seen=old)
    SdkInstance.objects.create(environment=production, app_name="a", instance_id="here", last_seen=recent)

    deleted = prune(now=now, batch=4)
    assert deleted == {
        "health metrics": 25,
        "request rollups": 7,
        "alert deliveries": 1,
        "resolved alerts": 1,
        "deployment log lines": 1,
        "deployment step runs": 1,
        "audit events": None,  # AUDIT_RETENTION_DAYS=0 keeps them
        "service minutes": 2,
        "service hours": 1,
        "signal samples": 1,
        "finished scheduled flag changes": 0,
        "flag usage hours": 5,
        "silent SDK instances": 1,
    }
    assert FlagUsage.objects.get().hour == recent
    assert list(SdkInstance.objects.values_list("instance_id", flat=True)) == ["here"]
    assert ServiceMinute.objects.count() == 1 and ServiceHour.objects.count() == 1
    assert HealthMetric.objects.count() == 1 and RequestRollup.objects.count() == 1
    assert list(Alert.objects.values_list("dedup_key", flat=True)) == ["b"]
    assert Delivery.objects.get().status == DeliveryStatus.PENDING
    assert list(LogLine.objects.values_list("message", flat=True)) == ["recent"]
    assert Deployment.objects.filter(pk=done.pk).exists()  # the deployment itself stays
    assert AuditEvent.objects.count() == 1

    settings.AUDIT_RETENTION_DAYS = 365
    assert prune_old_rows()["audit events"] == 1


def test_logs_of_an_active_deployment_are_never_pruned():
    now = timezone.now()
    pipeline = Pipeline.objects.create(name="p", steps=[])
    env = Environment.objects.create(name="e", pipeline=pipeline)
    running = Deployment.objects.create(environment=env, version="v1", status="running", requested_by="t")
    LogLine.objects.create(deployment=running, time=now - timedelta(days=400), message="still running")
    prune(now=now)
    assert LogLine.objects.filter(deployment=running).count() == 1


def test_each_app_registers_the_tables_it_owns_and_nothing_else():
    """The ground runs what the apps register; no rule prunes another app's table."""
    from controlplane.retention import _REGISTRY

    now = timezone.now()
    owners = {rule.name: (label, rule.rows(now).model._meta.app_label) for label, rule in _REGISTRY}
    assert {name: registered_by for name, (registered_by, _) in owners.items()} == {
        "audit events": "controlplane",
        "health metrics": "monitoring",
        "request rollups": "monitoring",
        "alert deliveries": "alerting",
        "resolved alerts": "alerting",
        "deployment log lines": "deployments",
        "deployment step runs": "deployments",
        "service minutes": "monitoring",
        "service hours": "monitoring",
        "signal samples": "monitoring",
        "finished scheduled flag changes": "flags",
        "flag usage hours": "flags",
        "silent SDK instances": "flags",
    }
    assert all(registered_by == owner for registered_by, owner in owners.values()), owners
