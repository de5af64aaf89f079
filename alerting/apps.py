from __future__ import annotations

import logging
from typing import Any

from django.apps import AppConfig
from django.db import transaction
from django.db.models.signals import post_save

logger = logging.getLogger(__name__)


def evaluate_soon(sender: Any, **kwargs: Any) -> None:
    """``backups.signals.backup_failed``: evaluate the rules now rather than at the next minute's round."""
    from alerting.tasks import evaluate_alert_rules

    try:
        evaluate_alert_rules.delay()
    except Exception as exc:  # noqa: BLE001 - the broker down: the scheduled evaluation still sees it
        logger.warning("could not queue an alert evaluation: %s", exc)


def evaluate_after_checks(sender: Any, **kwargs: Any) -> None:
    """``monitoring.signals.checks_recorded``: evaluate the rules in the checks' task, on the rows just stored."""
    from alerting.services import alert_rules_evaluate

    alert_rules_evaluate()


def follow_first_service(sender: Any, instance: Any, created: bool, raw: bool = False, **kwargs: Any) -> None:
    """monitoring.Service's post_save: the first service configured becomes what the shipped p95 and
    error-rate rules watch (``alerting.services.shipped_rules_follow_service``), after the commit."""
    if not created or raw:  # raw: loaddata, which restores rules as they were
        return
    name = instance.name

    def follow() -> None:
        from alerting.services import InvalidAlertSetting, shipped_rules_follow_service
        from controlplane.audit import Actor
        from monitoring.selectors import service_names

        if service_names() != [name]:  # not the first service, or gone since
            return
        try:
            moved = shipped_rules_follow_service(service=name, actor=Actor.system("alerting: first service"))
        except InvalidAlertSetting as exc:
            logger.warning("the shipped rules could not follow the service %s: %s", name, exc)
            return
        for rule in moved:
            logger.info("alert rule %s now watches the service %s", rule.name, name)

    transaction.on_commit(follow)


class AlertingConfig(AppConfig):
    name = "alerting"
    verbose_name = "Alerting"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from alerting.readiness import alert_channel
        from alerting.retention import RULES
        from controlplane.readiness import register_items
        from controlplane.retention import register_rules

        register_items(self.label, alert_channel)
        register_rules(self.label, *RULES)

        from alerting.state_metrics import alert_gauges
        from controlplane.state_metrics import register_state_metrics

        register_state_metrics(self.label, alert_gauges)

        from backups.signals import backup_failed
        from monitoring.signals import checks_recorded

        # Told, never called: backups and monitoring do not import alerting.
        backup_failed.connect(evaluate_soon, dispatch_uid="alerting-evaluate-on-backup-failure")
        checks_recorded.connect(evaluate_after_checks, dispatch_uid="alerting-evaluate-after-checks")
        # By the model's label: alerting reads monitoring only through monitoring.selectors.
        post_save.connect(follow_first_service, sender="monitoring.Service", dispatch_uid="alerting-first-service")
