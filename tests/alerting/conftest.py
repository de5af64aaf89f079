from __future__ import annotations

import importlib

import pytest

# The alert models moved from monitoring to alerting; the data migrations that ship the default rules
# (written when they were monitoring's) ask for them by their old label.
_MOVED = {"alert", "alertrule", "delivery", "notificationchannel", "silence"}


class _AppsAfterTheMove:
    def __init__(self, apps):
        self.apps = apps

    def get_model(self, app_label: str, model_name: str):
        if app_label == "monitoring" and model_name.lower() in _MOVED:
            app_label = "alerting"
        return self.apps.get_model(app_label, model_name)


@pytest.fixture(autouse=True)
def _default_alert_rules(request):
    """The default alert rules come from a data migration; a transactional test elsewhere in the
    session flushes every table, so put them back for the tests of this folder that use the database."""
    if request.node.get_closest_marker("django_db") is None and "db" not in request.fixturenames:
        return
    transactional = "transactional_db" in request.fixturenames or any(
        marker.kwargs.get("transaction") for marker in request.node.iter_markers("django_db")
    )
    request.getfixturevalue("transactional_db" if transactional else "db")
    from django.apps import apps as installed

    apps = _AppsAfterTheMove(installed)
    importlib.import_module("monitoring.migrations.0003_alerting").create_default_rules(apps, None)
    importlib.import_module("monitoring.migrations.0004_backup_failed_rule").add_backup_rules(apps, None)
    importlib.import_module("monitoring.migrations.0007_default_rules_hold_five_minutes").hold_five(apps, None)
    importlib.import_module("monitoring.migrations.0008_celery_beat_silent_rule").add_beat_rule(apps, None)
    importlib.import_module("alerting.migrations.0003_job_down_rule").add_job_down_rule(installed, None)
    importlib.import_module("alerting.migrations.0005_slo_burn_rules").add_slo_burn_rules(installed, None)
    importlib.import_module("backups.migrations.0002_targets_backups_verifications").create_default_target(
        installed, None
    )


@pytest.fixture
def alerts_on(db, django_capture_on_commit_callbacks):
    """The external_alerts flag on, as the shipped flags have it."""
    from controlplane.audit import Actor
    from flags.services import flag_create

    with django_capture_on_commit_callbacks(execute=True):
        flag_create(data={"name": "external_alerts", "enabled": True, "rollout_percent": 100}, actor=Actor.system())
