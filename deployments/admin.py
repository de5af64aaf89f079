"""Operator screens for deployments: every change goes through the deployments service and is audited."""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ActionForm
from django.db.models import QuerySet
from django.forms.fields import InvalidJSONInput
from django.http import HttpRequest

from controlplane.admin import AuditedAdminMixin, ReadOnlyAdminMixin, ReadOnlyInlineMixin
from controlplane.audit import Actor
from controlplane.errors import ControlPlaneError
from controlplane.forms import as_validation_error, report
from controlplane.status import StatusPillsAdmin, admin_status
from deployments.models import (
    AnalysisMeasurement,
    Deployment,
    Environment,
    LogLine,
    Pipeline,
    RecoveryPlan,
    StepRun,
)
from deployments.services import (
    NotCancellable,
    clean_silence_rules,
    deployment_cancel,
    deployment_request,
    environment_save,
    pending_detail,
    pipeline_save,
    rollback_to_previous,
)
from deployments.steps import InvalidStep, validate_steps


class StepsTextarea(forms.Textarea):
    """The steps as indented JSON in a monospace box as tall as they are (a stylesheet: the pages'
    Content-Security-Policy allows no inline style)."""

    class Media:
        css = {"all": ["css/admin-steps.css"]}

    def __init__(self) -> None:
        super().__init__(attrs={"class": "steps-json", "cols": 100, "spellcheck": "false"})

    def get_context(self, name: str, value: Any, attrs: dict[str, Any] | None) -> dict[str, Any]:
        context = super().get_context(name, value, attrs)
        lines = str(value or "").count("\n") + 1
        context["widget"]["attrs"]["rows"] = min(max(lines + 2, 12), 80)
        return context


class StepsField(forms.JSONField):
    """A pipeline's steps, checked against the schema; the error names the step and its field (and the
    line and column of a JSON syntax error)."""

    widget = StepsTextarea

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, InvalidJSONInput):
            return value  # what the operator typed, shown again as typed
        if value is None:
            return ""  # a new one: an empty box, not "null"
        return json.dumps(value, indent=2, ensure_ascii=False, cls=self.encoder)

    def to_python(self, value: Any) -> Any:
        try:
            return super().to_python(value)
        except forms.ValidationError:
            try:
                json.loads(value, cls=self.decoder)
            except json.JSONDecodeError as exc:
                raise forms.ValidationError(
                    "Not valid JSON: %(problem)s at line %(line)s, column %(column)s.",
                    code="invalid",
                    params={"problem": exc.msg, "line": exc.lineno, "column": exc.colno},
                ) from None
            raise

    def validate(self, value: Any) -> None:
        super().validate(value)
        try:
            validate_steps(value)
        except InvalidStep as exc:
            raise as_validation_error(exc) from None


class PipelineForm(forms.ModelForm):
    steps = StepsField()

    class Meta:
        model = Pipeline
        fields = ["name", "description", "steps", "silence_rules"]

    def clean_silence_rules(self) -> Any:
        names = self.cleaned_data.get("silence_rules")
        if names is None:
            return []  # an empty box: nothing silenced
        try:
            return clean_silence_rules(names)
        except ControlPlaneError as exc:
            raise as_validation_error(exc) from None


@admin.register(Pipeline)
class PipelineAdmin(admin.ModelAdmin):
    form = PipelineForm
    list_display = ["name", "description"]

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # deployments keep their own copy of the steps; environments point here

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return ["name"] if obj is not None else []  # saved by name: a rename would save a second pipeline

    def save_model(self, request: HttpRequest, obj: Pipeline, form: Any, change: bool) -> None:
        saved = pipeline_save(
            name=obj.name,
            steps=form.cleaned_data["steps"],
            description=form.cleaned_data.get("description", ""),
            silence_rules=form.cleaned_data.get("silence_rules") or [],
            actor=Actor.for_user(request.user),
        )
        obj.pk = saved.pk
        obj._state.adding = False


class DeployActionForm(ActionForm):
    # A plain Field, neither checked nor stripped (a CharField refuses a NUL byte itself, and the admin
    # then says only "No action selected"): the deployments service holds the one rule for a version,
    # and its message reaches the operator through the action.
    version = forms.Field(required=False, label="Version")


@admin.register(Environment)
class EnvironmentAdmin(admin.ModelAdmin):
    list_display = ["name", "pipeline", "health_url"]
    # The environment is one of the ground's list (Control plane > Environments); here, how it is deployed.
    fields = ["environment", "pipeline", "health_url"]
    action_form = DeployActionForm
    actions = ["deploy", "roll_back"]

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        # saved by name: another environment would save a second row
        return ["environment"] if obj is not None else []

    def save_model(self, request: HttpRequest, obj: Environment, form: Any, change: bool) -> None:
        saved = environment_save(
            name=obj.environment.name,
            pipeline=form.cleaned_data["pipeline"],
            health_url=form.cleaned_data.get("health_url", ""),
            actor=Actor.for_user(request.user),
        )
        obj.pk = saved.pk
        obj._state.adding = False

    def _each(self, request: HttpRequest, queryset: QuerySet[Environment], start: Any) -> None:
        for environment in queryset:
            try:
                deployment = start(environment)
            except ControlPlaneError as exc:  # bad version, locked, nothing to roll back to
                report(request, exc, about=environment.name)
                continue
            if deployment.dispatch_pending:
                message = f"deployment #{deployment.pk} queued, not sent to a worker yet: {pending_detail()}."
                self.message_user(request, f"{environment.name}: {message}", messages.WARNING)
                continue
            self.message_user(request, f"{environment.name}: deployment #{deployment.pk} queued.", messages.SUCCESS)

    @admin.action(description="Deploy the version given", permissions=["change"])
    def deploy(self, request: HttpRequest, queryset: QuerySet[Environment]) -> None:
        version = request.POST.get("version", "")
        actor = Actor.for_user(request.user)
        self._each(
            request, queryset, lambda env: deployment_request(environment=env.name, version=version, actor=actor)
        )

    @admin.action(description="Roll back to the previous release", permissions=["change"])
    def roll_back(self, request: HttpRequest, queryset: QuerySet[Environment]) -> None:
        actor = Actor.for_user(request.user)
        self._each(request, queryset, lambda env: rollback_to_previous(environment=env.name, actor=actor))


class StepRunInline(ReadOnlyInlineMixin, admin.TabularInline):
    model = StepRun
    fields = readonly_fields = (
        "phase",
        "index",
        "name",
        "kind",
        "status",
        "started_at",
        "finished_at",
        "exit_code",
        "error",
    )


@admin.register(Deployment)
class DeploymentAdmin(StatusPillsAdmin, ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = [
        "id", "environment", "version", "type", "dry_run", admin_status("status"), "requested_by", "created_at",
        "finished_at",
    ]  # fmt: skip
    list_filter = ["environment", "status", "type", "created_at"]
    search_fields = ["version", "requested_by"]
    readonly_fields = [
        "environment", "version", "type", "recovery_type", "dry_run", "status", "requested_by", "created_at",
        "started_at", "finished_at", "heartbeat_at", "worker", "cancel_requested", "error", "steps",
    ]  # fmt: skip
    exclude = ["claim", "requested_by_user"]
    inlines = [StepRunInline]
    actions = ["cancel"]

    def has_cancel_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("deployments.change_deployment")

    @admin.action(description="Cancel (a running one is stopped and rolled back)", permissions=["cancel"])
    def cancel(self, request: HttpRequest, queryset: QuerySet[Deployment]) -> None:
        for deployment in queryset:
            try:
                deployment_cancel(deployment=deployment, actor=Actor.for_user(request.user))
            except NotCancellable as exc:
                report(request, exc, level=messages.WARNING)
                continue
            self.message_user(request, f"deployment #{deployment.pk}: cancel requested.", messages.SUCCESS)


@admin.register(LogLine)
class LogLineAdmin(StatusPillsAdmin, ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["time", "deployment", admin_status("level"), "step", "message"]
    list_filter = ["level"]
    search_fields = ["message", "step"]


@admin.register(AnalysisMeasurement)
class AnalysisMeasurementAdmin(StatusPillsAdmin, ReadOnlyAdminMixin, admin.ModelAdmin):
    """What analysis steps measured; written only by the runner."""

    list_display = ["at", "step_run", "label", "value", "threshold", "baseline", "requests", admin_status("verdict")]
    list_filter = ["verdict"]
    search_fields = ["label", "detail"]
    list_select_related = ["step_run"]


class RecoveryPlanForm(forms.ModelForm):
    steps = StepsField()

    class Meta:
        model = RecoveryPlan
        fields = ["failure_type", "environment", "steps", "runbook"]


@admin.register(RecoveryPlan)
class RecoveryPlanAdmin(AuditedAdminMixin, admin.ModelAdmin):
    form = RecoveryPlanForm
    list_display = ["failure_type", "environment"]
