from __future__ import annotations

from django.apps import AppConfig


class ControlPlaneConfig(AppConfig):
    name = "controlplane"
    verbose_name = "Control plane"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.contrib import admin

        from controlplane import checks, signals
        from controlplane.context import connect_celery_signals

        admin.site.site_header = "Control plane administration"
        admin.site.site_title = "Control plane"
        admin.site.index_title = "Operations"
        checks.register()
        signals.connect()
        connect_celery_signals()
