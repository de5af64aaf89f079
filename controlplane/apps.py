from __future__ import annotations

from django.apps import AppConfig


class ControlPlaneConfig(AppConfig):
    name = "controlplane"
    verbose_name = "Control plane"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from celery.signals import worker_ready
        from django.contrib import admin

        from controlplane import operator_password, signals
        from controlplane.context import connect_celery_signals
        from controlplane.readiness import CONFIGURATION, register_items
        from controlplane.retention import AUDIT, register_rules

        admin.site.site_header = "Control plane administration"
        admin.site.site_title = "Control plane"
        admin.site.index_title = "Operations"
        register_items(self.label, *CONFIGURATION)
        register_rules(self.label, *AUDIT)
        signals.connect()
        connect_celery_signals()
        # The last of make run's start-up lines: the password printed before them has scrolled away.
        worker_ready.connect(operator_password.remind, weak=False, dispatch_uid="controlplane-operator-password")
