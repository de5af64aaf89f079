from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ActionForm
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from controlplane.audit import Actor
from controlplane.forms import add_to_form
from flags.evaluation import CompiledFlag, on_for
from flags.models import Flag
from flags.selectors import flag_history
from flags.services import (
    FIELDS,
    MAX_ROLLOUT_PERCENT,
    MIN_ROLLOUT_PERCENT,
    ROLLOUT_PERCENT_RULE,
    InvalidFlagDefinition,
    clean_fields,
    clean_rollout_percent,
    flag_create,
    flag_delete,
    flag_update,
)


class TargetingKeysField(forms.Field):
    """One targeting key per line: text in the form, a list of keys once cleaned."""

    widget = forms.Textarea(attrs={"rows": 4})

    def prepare_value(self, value: Any) -> Any:
        return "\n".join(value) if isinstance(value, list) else value

    def to_python(self, value: Any) -> list[str]:
        text = "" if value in self.empty_values else str(value)
        return [line.strip() for line in text.splitlines() if line.strip()]


class FlagForm(forms.ModelForm):
    targeting_keys = TargetingKeysField(required=False, help_text="The product's user ids, one per line.")

    class Meta:
        model = Flag
        fields = list(FIELDS)

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data
        values = {key: data[key] for key in FIELDS if key in data}
        if self.instance.pk:
            values.pop("name", None)  # renaming would break every service that asks for it
        try:
            clean_fields(values)
        except InvalidFlagDefinition as error:
            add_to_form(self, error)
        return data


# Reads the typed text as a whole number; the range is the services' rule (clean_rollout_percent).
WHOLE_NUMBER = forms.IntegerField()


class RolloutActionForm(ActionForm):
    # Text, checked by the action: a number the action form refused would make Django answer
    # "No action selected." and drop the selection instead of saying what is wrong with the percent.
    rollout_percent = forms.CharField(
        required=False,
        label="Rollout %",
        widget=forms.NumberInput(attrs={"min": MIN_ROLLOUT_PERCENT, "max": MAX_ROLLOUT_PERCENT, "step": 1}),
    )


@admin.register(Flag)
class FlagAdmin(admin.ModelAdmin):
    form = FlagForm
    action_form = RolloutActionForm
    list_display = ["name", "enabled", "rollout_percent", "on_for_summary", "owner", "modified"]
    list_filter = ["enabled", "owner"]
    search_fields = ["name", "description", "owner"]
    ordering = ["name"]
    actions = ["enable", "disable", "set_rollout"]
    change_form_template = "admin/flags/flag/change_form.html"

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return ["name"] if obj is not None else []

    @admin.display(description="on for")
    def on_for_summary(self, flag: Flag) -> str:
        return on_for(CompiledFlag.of(flag))

    def save_model(self, request: HttpRequest, obj: Flag, form: Any, change: bool) -> None:
        actor = Actor.for_user(request.user)
        values = {key: form.cleaned_data[key] for key in FIELDS if key in form.cleaned_data}
        if change:
            values.pop("name", None)
            saved = flag_update(name=obj.name, changes=values, actor=actor)
        else:
            saved = flag_create(data=values, actor=actor)
        obj.pk = saved.pk
        obj._state.adding = False

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        pass  # the flag has no related rows the form edits; the service saved everything

    def delete_model(self, request: HttpRequest, obj: Flag) -> None:
        flag_delete(name=obj.name, actor=Actor.for_user(request.user))

    def delete_queryset(self, request: HttpRequest, queryset: Any) -> None:
        for flag in queryset:
            self.delete_model(request, flag)

    def _update_each(self, request: HttpRequest, queryset: Any, changes: dict[str, Any], done: str) -> None:
        actor = Actor.for_user(request.user)
        for flag in queryset:
            flag_update(name=flag.name, changes=changes, actor=actor)
        self.message_user(request, f"{done} {queryset.count()} flag(s).", messages.SUCCESS)

    @admin.action(description="Enable the selected flags", permissions=["change"])
    def enable(self, request: HttpRequest, queryset: Any) -> None:
        self._update_each(request, queryset, {"enabled": True}, "Enabled")

    @admin.action(description="Disable the selected flags", permissions=["change"])
    def disable(self, request: HttpRequest, queryset: Any) -> None:
        self._update_each(request, queryset, {"enabled": False}, "Disabled")

    @admin.action(description="Set the rollout percent of the selected flags", permissions=["change"])
    def set_rollout(self, request: HttpRequest, queryset: Any) -> HttpResponse | None:
        raw = request.POST.get("rollout_percent", "").strip()
        try:
            percent = clean_rollout_percent(WHOLE_NUMBER.clean(raw))
        except (forms.ValidationError, InvalidFlagDefinition):
            # The same flags, still selected, on a page that asks for the percent again.
            got = f" (got {raw!r})" if raw else ""
            message = f"The rollout percent {ROLLOUT_PERCENT_RULE}{got}."
            self.message_user(request, message, messages.ERROR)
            context = {
                **self.admin_site.each_context(request),
                "opts": self.model._meta,
                "title": "Set the rollout percent",
                "queryset": queryset,
                "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
                "rollout_percent": raw,
            }
            return TemplateResponse(request, "admin/flags/flag/set_rollout.html", context)
        self._update_each(request, queryset, {"rollout_percent": percent}, f"Set rollout to {percent} % on")
        return None

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict | None = None
    ) -> HttpResponse:
        extra_context = {
            **(extra_context or {}),
            "history": flag_history(int(object_id)) if object_id.isdigit() else [],
        }
        return super().change_view(request, object_id, form_url, extra_context)
