from __future__ import annotations

from django.apps import AppConfig


class BackupsConfig(AppConfig):
    name = "backups"
    verbose_name = "Backups"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from backups.readiness import backup_encryption, backup_targets
        from controlplane.readiness import register_items

        register_items(self.label, backup_targets, backup_encryption)

        from backups.state_metrics import backup_gauges
        from controlplane.state_metrics import register_state_metrics

        register_state_metrics(self.label, backup_gauges)
