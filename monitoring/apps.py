from __future__ import annotations

from django.apps import AppConfig


class MonitoringConfig(AppConfig):
    name = "monitoring"
    verbose_name = "Monitoring"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from controlplane.retention import register_rules
        from monitoring.retention import RULES

        register_rules(self.label, *RULES)

        from controlplane.state_metrics import register_state_metrics
        from monitoring.state_metrics import monitoring_gauges

        register_state_metrics(self.label, monitoring_gauges)

        from django.db.models.signals import post_delete, post_save

        from monitoring import job_monitors
        from monitoring.models import JobMonitor

        # The in-process copies of the ping keys reload when a monitor comes or goes.
        post_save.connect(job_monitors.on_monitor_saved, sender=JobMonitor, dispatch_uid="monitoring-ping-keys")
        post_delete.connect(job_monitors.on_monitor_deleted, sender=JobMonitor, dispatch_uid="monitoring-ping-keys")

        from celery.signals import beat_init, worker_ready, worker_shutdown

        from monitoring import watchdog

        # Only worker and beat processes send these: the worker's timer (its heartbeat, and the checks
        # while beat is silent) and beat's first start.
        worker_ready.connect(watchdog.on_worker_ready, weak=False, dispatch_uid="monitoring-worker-timer")
        worker_shutdown.connect(watchdog.on_worker_shutdown, weak=False, dispatch_uid="monitoring-worker-timer-stop")
        beat_init.connect(watchdog.on_beat_init, weak=False, dispatch_uid="monitoring-beat-started")
