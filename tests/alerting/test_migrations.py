"""Alerting's models moved out of monitoring by Django's state only: a database migrated before the move
keeps its rows, its permissions and its history once it is migrated past it."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group, Permission, User
from django.contrib.contenttypes.models import ContentType
from django.core.management import call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

BEFORE = [("monitoring", "0008_celery_beat_silent_rule"), ("alerting", None)]


def _migrate(targets):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    ContentType.objects.clear_cache()


@pytest.mark.django_db(transaction=True)
def test_a_database_from_before_the_move_keeps_its_rows_permissions_and_history():
    _migrate(BEFORE)
    try:
        old = MigrationExecutor(connection).loader.project_state(BEFORE[0]).apps
        Channel = old.get_model("monitoring", "NotificationChannel")
        Rule = old.get_model("monitoring", "AlertRule")
        channel = Channel.objects.create(name="ops", kind="webhook", url="https://hooks.example/x")
        rule = Rule.objects.create(name="slow", kind="p95_latency_ms", threshold=500)
        rule.channels.add(channel)
        # What an install of that time has: monitoring's content types and permissions, granted.
        kind = ContentType.objects.get_or_create(app_label="monitoring", model="alert")[0]
        change = Permission.objects.get_or_create(content_type=kind, codename="change_alert", defaults={"name": "x"})[0]
        on_call = Group.objects.create(name="on-call")
        on_call.permissions.add(change)
        operator = User.objects.create_user("ops")
        operator.groups.add(on_call)
        from controlplane.models import AuditEvent

        AuditEvent.objects.create(
            actor_type="system", actor_label="t", action="notificationchannel.create",
            object_type="monitoring.notificationchannel", object_id=str(channel.pk),
        )  # fmt: skip
    finally:
        _migrate(MigrationExecutor(connection).loader.graph.leaf_nodes())

    from alerting.models import AlertRule, NotificationChannel
    from controlplane.models import AuditEvent

    assert list(AlertRule.objects.get(name="slow").channels.values_list("name", flat=True)) == ["ops"]
    assert NotificationChannel.objects.get(name="ops").url == "https://hooks.example/x"
    # The same content type row, renamed: the permission granted then is alerting's now.
    assert ContentType.objects.get(pk=kind.pk).app_label == "alerting"
    assert not ContentType.objects.filter(app_label="monitoring", model="alert").exists()
    assert User.objects.get(pk=operator.pk).has_perm("alerting.change_alert")
    assert AuditEvent.objects.filter(object_type="alerting.notificationchannel", object_id=str(channel.pk)).exists()
    assert not AuditEvent.objects.filter(object_type__startswith="monitoring.").exists()
    call_command("makemigrations", "--check", "--dry-run", verbosity=0)


@pytest.mark.django_db(transaction=True)
def test_going_back_gives_monitoring_its_content_types_again():
    from alerting.models import Alert

    kind = ContentType.objects.get_for_model(Alert)
    _migrate(BEFORE)
    try:
        assert ContentType.objects.get(pk=kind.pk).app_label == "monitoring"
    finally:
        _migrate(MigrationExecutor(connection).loader.graph.leaf_nodes())
    assert ContentType.objects.get(pk=kind.pk).app_label == "alerting"
