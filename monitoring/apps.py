from __future__ import annotations

from django.apps import AppConfig


class MonitoringConfig(AppConfig):
    name = "monitoring"
    verbose_name = "Monitoring"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from controlplane.readiness import register_items
        from controlplane.retention import register_rules
        from monitoring.readiness import alert_channel
        from monitoring.retention import RULES

        register_items(self.label, alert_channel)
        register_rules(self.label, *RULES)

        from backups.signals import backup_failed
        from monitoring.alert_tasks import evaluate_soon

        backup_failed.connect(evaluate_soon, dispatch_uid="monitoring-evaluate-on-backup-failure")

        from celery.signals import beat_init, worker_ready, worker_shutdown

        from monitoring import watchdog

        # Only worker and beat processes send these: the worker's timer (its heartbeat, and the checks
        # while beat is silent) and beat's first start.
        worker_ready.connect(watchdog.on_worker_ready, weak=False, dispatch_uid="monitoring-worker-timer")
        worker_shutdown.connect(watchdog.on_worker_shutdown, weak=False, dispatch_uid="monitoring-worker-timer-stop")
        beat_init.connect(watchdog.on_beat_init, weak=False, dispatch_uid="monitoring-beat-started")
