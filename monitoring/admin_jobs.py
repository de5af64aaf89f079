from __future__ import annotations

from contextvars import ContextVar
from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.utils.html import format_html

from controlplane.admin import AuditedAdminMixin
from controlplane.audit import Actor
from monitoring.job_monitors import job_monitor_set_paused
from monitoring.models import JobMonitor

# The scheme and host the operator reached, for the ping URL shown on the page: set per request (an admin
# class is shared between threads).
_site: ContextVar[str] = ContextVar("job_monitor_admin_site", default="")

# What pings and beat write: not operator changes, and the output may hold anything a job printed.
RUNTIME_FIELDS = (
    "state",
    "last_ping",
    "last_start",
    "last_ping_kind",
    "last_exit_status",
    "last_duration",
    "last_output",
    "state_changed",
    "created",
)


@admin.register(JobMonitor)
class JobMonitorAdmin(AuditedAdminMixin, admin.ModelAdmin):
    list_display = ["name", "state", "schedule_text", "grace_seconds", "last_ping", "last_duration"]
    list_filter = ["state", "schedule_kind"]
    search_fields = ["name"]
    fields = ["name", "schedule_kind", "period_seconds", "cron", "tz", "grace_seconds", "ping_url", *RUNTIME_FIELDS]
    readonly_fields = ["ping_url", *RUNTIME_FIELDS]
    audit_exclude = RUNTIME_FIELDS
    actions = ["pause", "resume"]

    @admin.display(description="schedule")
    def schedule_text(self, obj: JobMonitor) -> str:
        if obj.schedule_kind == "cron":
            return f"{obj.cron} ({obj.tz})"
        return f"every {obj.period_seconds} s"

    @admin.display(description="ping URL")
    def ping_url(self, obj: JobMonitor) -> str:
        if obj.pk is None:
            return "shown once the monitor is saved"
        return format_html(
            "<code>{}{}</code> (with /start, /fail or /&lt;exit status&gt;)", _site.get(), obj.ping_path()
        )

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        _site.set(request.build_absolute_uri("/").rstrip("/"))
        return super().get_fields(request, obj)

    def response_add(self, request: HttpRequest, obj: Any, post_url_continue: str | None = None) -> HttpResponse:
        """After a create, the change page, where the new monitor's ping URL is."""
        super().response_add(request, obj, post_url_continue)
        messages.info(request, f"Ping URL of {obj.name}: {request.build_absolute_uri(obj.ping_path())}")
        return HttpResponseRedirect(reverse("admin:monitoring_jobmonitor_change", args=[obj.pk]))

    @admin.action(description="Pause the selected monitors (no late, down or alert)", permissions=["change"])
    def pause(self, request: HttpRequest, queryset: QuerySet[JobMonitor]) -> None:
        changed = sum(
            job_monitor_set_paused(monitor=m, paused=True, actor=Actor.for_user(request.user)) for m in queryset
        )
        self.message_user(request, f"{changed} monitor(s) paused.")

    @admin.action(description="Resume the selected monitors (new until their next ping)", permissions=["change"])
    def resume(self, request: HttpRequest, queryset: QuerySet[JobMonitor]) -> None:
        changed = sum(
            job_monitor_set_paused(monitor=m, paused=False, actor=Actor.for_user(request.user)) for m in queryset
        )
        self.message_user(request, f"{changed} monitor(s) resumed.")
