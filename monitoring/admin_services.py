"""Admin "Services": a product's service with its metric sources and SLOs, and how its scrapes go.

The sources' and objectives' rows are edited inline under their service; each inline row created,
changed or deleted is audited like the service itself. What the scrape worker writes (up, last success,
last error, its state) is shown read-only and left out of the audit.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html
from django.utils.safestring import SafeString

from controlplane.admin import AuditedAdminMixin
from controlplane.audit import Actor, audit_record, snapshot
from controlplane.status import StatusPillsAdmin, status_pill
from monitoring.models import MetricSource, Service, ServiceLevelObjective, SourceKind

# What the worker writes: not operator changes (``state`` is never shown: counters per replica).
SOURCE_RUNTIME_FIELDS = ("up_pill", "last_success", "last_error", "last_attempt")


def _up_pill(up: bool | None) -> SafeString:
    if up is None:
        return status_pill("new", "not scraped yet")
    return status_pill("up") if up else status_pill("down")


class MetricSourceInline(admin.StackedInline):
    model = MetricSource
    extra = 0
    fieldsets = [
        (None, {"fields": ["kind", "urls", "bearer_token_env", "interval_seconds", "timeout_seconds", "enabled"]}),
        ("Last scrape", {"fields": list(SOURCE_RUNTIME_FIELDS)}),
        (
            "Mapping (blank: recognise prometheus-fastapi-instrumentator, OpenTelemetry or django-prometheus)",
            {
                "classes": ["collapse"],
                "fields": ["histogram_metric", "requests_metric", "route_label", "status_label", "error_statuses"],
            },
        ),
        ("Prometheus server", {"classes": ["collapse"], "fields": ["selector", "queries"]}),
    ]
    readonly_fields = SOURCE_RUNTIME_FIELDS

    @admin.display(description="up")
    def up_pill(self, obj: MetricSource) -> SafeString:
        return _up_pill(obj.up)


class ObjectiveInline(admin.TabularInline):
    model = ServiceLevelObjective
    extra = 0
    fields = ["name", "kind", "target_percent", "threshold_ms", "window_days", "alerting"]


@admin.register(Service)
class ServiceAdmin(StatusPillsAdmin, AuditedAdminMixin, admin.ModelAdmin):
    list_display = ["name", "description", "enabled", "scrape_status", "last_success", "last_error"]
    list_filter = ["enabled"]
    search_fields = ["name", "description"]
    fields = ["name", "description", "enabled", "created"]
    readonly_fields = ["created"]
    inlines = [MetricSourceInline, ObjectiveInline]
    actions = ["scrape_now"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Service]:
        return super().get_queryset(request).prefetch_related("sources")

    def _first_source(self, obj: Service) -> MetricSource | None:
        return next((source for source in obj.sources.all() if source.enabled), None)

    @admin.display(description="up")
    def scrape_status(self, obj: Service) -> SafeString:
        source = self._first_source(obj)
        if source is None:
            return status_pill("", "no source")
        return _up_pill(source.up)

    @admin.display(description="last success")
    def last_success(self, obj: Service) -> Any:
        source = self._first_source(obj)
        return source.last_success if source is not None and source.last_success else "–"

    @admin.display(description="last error")
    def last_error(self, obj: Service) -> str:
        source = self._first_source(obj)
        return format_html("{}", source.last_error) if source is not None and source.last_error else ""

    def save_formset(self, request: HttpRequest, form: Any, formset: Any, change: bool) -> None:
        """Save the inline rows, one audit event for each created, changed or deleted."""
        model = formset.model
        existing = [f.instance.pk for f in formset.initial_forms if f.instance.pk is not None]
        before = {row.pk: snapshot(row) for row in model._default_manager.filter(pk__in=existing)}
        # Known before the save, which clears a deleted row's pk.
        deleting = [(f.instance.pk, str(f.instance)) for f in formset.deleted_forms if f.instance.pk is not None]
        super().save_formset(request, form, formset, change)
        actor = Actor.for_user(request.user)
        name = model._meta.model_name
        for obj in formset.new_objects:
            audit_record(actor=actor, action=f"{name}.create", obj=obj, after=snapshot(obj))
        for obj, _ in formset.changed_objects:
            audit_record(actor=actor, action=f"{name}.change", obj=obj, before=before.get(obj.pk), after=snapshot(obj))
        for pk, label in deleting:
            audit_record(
                actor=actor,
                action=f"{name}.delete",
                object_type=model._meta.label_lower,
                object_id=str(pk),
                object_label=label,
                before=before.get(pk),
            )

    @admin.action(description="Scrape the selected services' sources now", permissions=["change"])
    def scrape_now(self, request: HttpRequest, queryset: QuerySet[Service]) -> None:
        from monitoring.scrape import scrape_sources_run

        sources = MetricSource.objects.filter(
            service__in=queryset, kind=SourceKind.SCRAPE, enabled=True
        ).select_related("service")
        results = scrape_sources_run(list(sources))
        answered = sum(1 for result in results if result.up)
        self.message_user(request, f"{len(results)} source(s) scraped, {answered} with every replica answering.")
