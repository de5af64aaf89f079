"""A rule of its own for beat's heartbeat: it fires on the first failed check (heartbeat over 3
intervals old), so a stopped beat is announced within 3 minutes instead of after "any check failing 3
times running" (the worker that stands in for beat runs the checks once a minute)."""

from django.db import migrations

BEAT_SILENT_RULE = {
    "name": "celery beat silent",
    "kind": "check_status",
    "component": "celery-beat",
    "measurement": "heartbeatAge",
    "threshold": 1.0,
    "severity": "critical",
    "description": "Beat's heartbeat is over 3 intervals (90 s) old: periodic tasks (backups, checks, reaper) "
    "are not being scheduled. A worker runs the checks in beat's place, so this fires and resolves on its own.",
}


def add_beat_rule(apps, schema_editor):
    AlertRule = apps.get_model("monitoring", "AlertRule")
    AlertRule.objects.get_or_create(name=BEAT_SILENT_RULE["name"], defaults=BEAT_SILENT_RULE)


def remove_beat_rule(apps, schema_editor):
    apps.get_model("monitoring", "AlertRule").objects.filter(name=BEAT_SILENT_RULE["name"]).delete()


class Migration(migrations.Migration):
    dependencies = [("monitoring", "0007_default_rules_hold_five_minutes")]
    operations = [migrations.RunPython(add_beat_rule, remove_beat_rule)]
