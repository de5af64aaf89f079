from __future__ import annotations

from typing import Any

from django.apps import AppConfig


class DeploymentsConfig(AppConfig):
    name = "deployments"
    verbose_name = "Deployments"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from controlplane.panels import register_panel
        from controlplane.retention import register_rules
        from deployments.retention import RULES
        from deployments.selectors import latest_deployments

        register_rules(self.label, *RULES)

        # The dashboard (monitoring) shows the newest deployments without importing this app.
        register_panel("deployments", "deployments/_dashboard_panel.html", lambda now: latest_deployments(5))

        from controlplane.state_metrics import register_state_metrics
        from deployments.state_metrics import deployment_gauges

        # /metrics (monitoring) charts the deployments the same way.
        register_state_metrics(self.label, deployment_gauges)

        from controlplane.changes import register_change_kind
        from deployments.changes import NOT_CHANGES, PREFIX, change_words

        # The charts mark a run's start, rollback and end, and firing alerts list them (controlplane.changes).
        register_change_kind("deployment", prefix=PREFIX, exclude=NOT_CHANGES, describe=change_words)

        from controlplane.runbooks import register_recovery_plans
        from deployments.models import RecoveryPlan

        # An alert rule names a plan and its alerts link to its page, without alerting importing this app.
        register_recovery_plans(
            names=lambda: list(RecoveryPlan.objects.values_list("failure_type", flat=True)), url=_plan_url
        )

        from alerting.signals import alert_fired

        alert_fired.connect(_run_plan_for_alert, dispatch_uid="deployments-recovery-plan-on-alert")


def _run_plan_for_alert(sender: Any, **kwargs: Any) -> None:
    """``alerting.signals.alert_fired``: a rule with ``auto`` runs its recovery plan (once per firing)."""
    from deployments.services import recovery_run_for_alert

    recovery_run_for_alert(
        alert_id=kwargs["alert_id"],
        rule_name=kwargs["rule_name"],
        recovery_plan=kwargs["recovery_plan"],
        recovery_auto=kwargs["recovery_auto"],
    )


def _plan_url(failure_type: str, alert_id: int | None) -> str:
    """A recovery plan's page (its dry run, then the button that runs it), for an alert's "run <plan>"."""
    from django.urls import reverse

    url = reverse("deployments:plan", args=[failure_type])
    return f"{url}?alert={alert_id}" if alert_id is not None else url
