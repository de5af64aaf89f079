from __future__ import annotations

from django.apps import AppConfig


class MonitoringConfig(AppConfig):
    name = "monitoring"
    verbose_name = "Monitoring"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from controlplane.readiness import register_items
        from monitoring.readiness import alert_channel

        register_items(self.label, alert_channel)
