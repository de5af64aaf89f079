from __future__ import annotations

from django.contrib import admin
from django.db import models

from controlplane.admin import AuditedAdminMixin, ReadOnlyAdminMixin
from controlplane.status import StatusPillsAdmin, admin_status
from monitoring.models import HealthMetric, MonitoredEndpoint


@admin.register(MonitoredEndpoint)
class MonitoredEndpointAdmin(AuditedAdminMixin, admin.ModelAdmin):
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}  # Django 6's default, now
    list_display = ["name", "url", "expected_status", "timeout_ms", "body_contains", "enabled"]
    list_filter = ["enabled"]
    search_fields = ["name", "url"]


@admin.register(HealthMetric)
class HealthMetricAdmin(StatusPillsAdmin, ReadOnlyAdminMixin, admin.ModelAdmin):
    """Read-only: written by the scheduled checks."""

    list_display = ["time", "component", "measurement", admin_status("status"), "value", "unit", "output"]
    list_filter = ["status", "component", "time"]
    search_fields = ["component", "output"]
    date_hierarchy = "time"
    show_full_result_count = False  # a count over millions of rows is a slow page
