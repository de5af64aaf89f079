from __future__ import annotations

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

        from controlplane.drills import register_plans
        from deployments.selectors import drill_plans

        # Backups runs and shows the restore drills of the plans without importing this app.
        register_plans(self.label, drill_plans)
