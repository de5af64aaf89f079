from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ActionForm
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from controlplane.audit import Actor
from controlplane.forms import add_to_form
from controlplane.models import DEFAULT_FLAGS_ENVIRONMENT, Environment
from flags import definitions as docs
from flags.evaluation import on_for
from flags.models import (
    Constraint,
    Dependency,
    Flag,
    FlagState,
    FlagType,
    ScheduledChange,
    ScheduledChangeKind,
    ScheduledChangeStatus,
    Segment,
    Strategy,
    Variant,
)
from flags.schedules import InvalidSchedule, ScheduledChangeNotFound, cancel_change, schedule_change
from flags.selectors import compiled_of, flag_history
from flags.services import (
    FIELDS,
    MAX_ROLLOUT_PERCENT,
    MIN_ROLLOUT_PERCENT,
    ROLLOUT_PERCENT_RULE,
    InvalidFlagDefinition,
    check_dependencies,
    clean_fields,
    clean_rollout_percent,
    flag_create,
    flag_delete,
    flag_dependencies_set,
    flag_state_saved,
    flag_toggle,
    flag_update,
    segment_deleted,
    segment_saved,
    state_before,
    state_checked,
)


class TargetingKeysField(forms.Field):
    """One targeting key per line: text in the form, a list of keys once cleaned."""

    widget = forms.Textarea(attrs={"rows": 4})

    def prepare_value(self, value: Any) -> Any:
        return "\n".join(value) if isinstance(value, list) else value

    def to_python(self, value: Any) -> list[str]:
        text = "" if value in self.empty_values else str(value)
        return [line.strip() for line in text.splitlines() if line.strip()]


class ApplyAtField(forms.DateTimeField):
    """When to apply an edit instead of now: a time in UTC (the form says so, whatever the server's
    zone), in the future; empty means now."""

    def clean(self, value: Any) -> datetime | None:
        at: datetime | None = super().clean(value)
        if at is None:
            return None
        at = at.replace(tzinfo=UTC) if timezone.is_naive(at) else at.astimezone(UTC)
        if at <= timezone.now():
            raise forms.ValidationError(f"{at:%Y-%m-%d %H:%M} UTC is not in the future; leave it empty to save now.")
        return at


def _apply_at_field() -> ApplyAtField:
    return ApplyAtField(
        required=False,
        label="Schedule this edit for (UTC)",
        input_formats=["%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S"],
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}),
        help_text="Empty: save now. A time: nothing changes now; the edit is applied then, if the state has not moved.",
    )


class LinesField(forms.Field):
    """One item per line: text in the form, a list once cleaned."""

    widget = forms.Textarea(attrs={"rows": 3})

    def prepare_value(self, value: Any) -> Any:
        return "\n".join(str(v) for v in value) if isinstance(value, list) else value

    def to_python(self, value: Any) -> list[str]:
        text = "" if value in self.empty_values else str(value)
        return [line.strip() for line in text.splitlines() if line.strip()]


class ParametersField(forms.Field):
    """``name=value`` per line (Unleash's IPs, hostNames): text in the form, a dict once cleaned."""

    widget = forms.Textarea(attrs={"rows": 2})

    def prepare_value(self, value: Any) -> Any:
        return "\n".join(f"{k}={v}" for k, v in value.items()) if isinstance(value, dict) else value

    def to_python(self, value: Any) -> dict[str, str]:
        text = "" if value in self.empty_values else str(value)
        out = {}
        for line in text.splitlines():
            if not line.strip():
                continue
            name, sep, rest = line.partition("=")
            if not sep or not name.strip():
                raise forms.ValidationError(f"{line.strip()!r} is not name=value")
            out[name.strip()] = rest.strip()
        return out


class OverridesField(forms.Field):
    """A variant's overrides: ``field=value, value`` per line (these users always get the variant)."""

    widget = forms.Textarea(attrs={"rows": 2})

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, list):
            return "\n".join(f"{o['field']}={', '.join(o['values'])}" for o in value if isinstance(o, dict))
        return value

    def to_python(self, value: Any) -> list[dict[str, Any]]:
        text = "" if value in self.empty_values else str(value)
        out = []
        for line in text.splitlines():
            if not line.strip():
                continue
            name, sep, rest = line.partition("=")
            values = [v.strip() for v in rest.split(",") if v.strip()]
            if not sep or not name.strip() or not values:
                raise forms.ValidationError(f"{line.strip()!r} is not field=value, value")
            out.append({"field": name.strip(), "values": values})
        return out


class FlagForm(forms.ModelForm):
    """The flag and production's one line (today's editing); a production state with more strategies
    than that is edited on its state's page, and then rollout and keys here are left as they are."""

    enabled = forms.BooleanField(required=False, help_text="Production's switch: off means off for everyone.")
    rollout_percent = forms.IntegerField(
        required=False,
        min_value=MIN_ROLLOUT_PERCENT,
        max_value=MAX_ROLLOUT_PERCENT,
        help_text="Production's share of users (0 to 100) who get the flag when it is enabled.",
    )
    targeting_keys = TargetingKeysField(required=False, help_text="The product's user ids, one per line.")

    class Meta:
        model = Flag
        fields = ["name", "type", "description", "owner"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.initial.update(
                enabled=self.instance.enabled,
                rollout_percent=self.instance.rollout_percent,
                targeting_keys=self.instance.targeting_keys or [],
            )
            self.fields["type"].disabled = True  # a type change would strand every variant's value
        else:
            self.initial.setdefault("rollout_percent", 0)
            self.fields["type"].required = False  # boolean unless chosen

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data
        if data.get("rollout_percent") is None:
            data["rollout_percent"] = self.instance.rollout_percent if self.instance.pk else 0
        values = {key: data[key] for key in FIELDS if key in data and data[key] is not None}
        if self.instance.pk:
            values.pop("name", None)  # renaming would break every service that asks for it
        try:
            clean_fields(values)
        except InvalidFlagDefinition as error:
            add_to_form(self, error)
        return data


# Reads the typed text as a whole number; the range is the services' rule (clean_rollout_percent).
WHOLE_NUMBER = forms.IntegerField()


class ProductionEnabledFilter(admin.SimpleListFilter):
    title = "enabled in production"
    parameter_name = "enabled"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("1", "Yes"), ("0", "No")]

    def queryset(self, request: HttpRequest, queryset: Any) -> Any:
        if self.value() not in ("0", "1"):
            return queryset
        on = queryset.filter(states__environment__name=DEFAULT_FLAGS_ENVIRONMENT, states__enabled=True)
        return on if self.value() == "1" else queryset.exclude(pk__in=on.values("pk"))


class FlagActionForm(ActionForm):
    """The changelist's actions: which environment they act on (production unless chosen), and the
    percent of "Set the rollout percent"."""

    environment = forms.ChoiceField(required=False, label="in")
    # Text, checked by the action: a number the action form refused would make Django answer
    # "No action selected." and drop the selection instead of saying what is wrong with the percent.
    rollout_percent = forms.CharField(
        required=False,
        label="Rollout %",
        widget=forms.NumberInput(attrs={"min": MIN_ROLLOUT_PERCENT, "max": MAX_ROLLOUT_PERCENT, "step": 1}),
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        field = self.fields["environment"]
        assert isinstance(field, forms.ChoiceField)
        field.choices = [
            (name, name) for name in Environment.objects.order_by("position", "name").values_list("name", flat=True)
        ]
        field.initial = DEFAULT_FLAGS_ENVIRONMENT


def _environment_cell(env: Environment) -> Any:
    """A changelist column for one environment: the flag's state there and a button that turns it
    the other way (posted to the admin's toggle view; a production environment asks first)."""

    @admin.display(description=env.name)
    def cell(flag: Flag) -> str:
        state = flag.state(env.name)
        on = bool(state is not None and state.enabled)
        summary = on_for(compiled_of(flag, env.name)) if on else "off"
        return format_html(
            '<span class="flag-cell">{}</span> <button type="submit" class="button" formnovalidate formaction="{}"'
            ' name="set" value="{}:{}" aria-label="Turn {} {} in {}">Turn {}</button>',
            summary,
            reverse("admin:flags_flag_toggle", args=[flag.pk]),
            env.name,
            "0" if on else "1",
            "off" if on else "on",
            flag.name,
            env.name,
            "off" if on else "on",
        )

    return cell


class DependencyForm(forms.ModelForm):
    variants = LinesField(required=False, help_text="Only when the parent serves one of these variants (one per line).")

    class Meta:
        model = Dependency
        fields = ["parent", "enabled", "variants"]


class DependencyFormSet(forms.BaseInlineFormSet):
    """Checks the whole list (a parent that exists, one level deep) before anything is saved."""

    def documents(self) -> list[dict[str, Any]]:
        return [
            {
                "feature": form.cleaned_data["parent"],
                "enabled": form.cleaned_data.get("enabled", False),
                "variants": form.cleaned_data.get("variants") or [],
            }
            for form in self.forms
            if form.cleaned_data and not form.cleaned_data.get("DELETE") and form.cleaned_data.get("parent")
        ]

    def clean(self) -> None:
        super().clean()
        if any(self.errors):
            return
        name = self.instance.name or (self.data.get("name") or "").strip()
        try:
            check_dependencies(name, self.documents())
        except InvalidFlagDefinition as error:
            raise forms.ValidationError(error.message) from None


class DependencyInline(admin.TabularInline):
    model = Dependency
    form = DependencyForm
    formset = DependencyFormSet
    extra = 0
    verbose_name = "dependency (a parent flag this one needs)"
    verbose_name_plural = "dependencies (parent flags this one needs; one level deep)"


@admin.register(Flag)
class FlagAdmin(admin.ModelAdmin):
    form = FlagForm
    action_form = FlagActionForm
    list_display = ["name", "type", "production_enabled", "on_for_summary", "owner", "modified"]
    list_filter = [ProductionEnabledFilter, "type", "owner"]
    search_fields = ["name", "description", "owner"]
    ordering = ["name"]
    actions = ["enable", "disable", "set_rollout"]
    inlines = [DependencyInline]
    change_form_template = "admin/flags/flag/change_form.html"

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return ["name", "states"] if obj is not None else []

    def get_queryset(self, request: HttpRequest) -> Any:
        return docs.flags_queryset()

    @admin.display(description="enabled in production", boolean=True)
    def production_enabled(self, flag: Flag) -> bool:
        return flag.enabled

    @admin.display(description="on for (production)")
    def on_for_summary(self, flag: Flag) -> str:
        return on_for(compiled_of(flag))

    @admin.display(description="states")
    def states(self, flag: Flag) -> str:
        return format_html_join(
            "",
            '<li><a href="{}">{}</a>: {}</li>',
            (
                (
                    reverse("admin:flags_flagstate_change", args=[state.pk]),
                    state.environment.name,
                    on_for(compiled_of(flag, state.environment.name)),
                )
                for state in flag.states.all()
            ),
        )

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        fields = ["name", "type", "description", "owner", "enabled", "rollout_percent", "targeting_keys"]
        return [*fields, "states"] if obj is not None else fields

    def save_model(self, request: HttpRequest, obj: Flag, form: Any, change: bool) -> None:
        actor = Actor.for_user(request.user)
        values = {key: form.cleaned_data[key] for key in FIELDS if key in form.cleaned_data}
        if change:
            values.pop("name", None)
            if obj.rollout_percent is None:  # production holds more than one line: its page edits it
                values.pop("rollout_percent", None)
                values.pop("targeting_keys", None)
            saved = flag_update(name=obj.name, changes=values, actor=actor)
        else:
            saved = flag_create(data={**values, "type": form.cleaned_data.get("type") or FlagType.BOOLEAN}, actor=actor)
        obj.pk = saved.pk
        obj._state.adding = False

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        # The service saved the flag; its dependencies go through theirs (checked, audited, published).
        for formset in formsets:
            if isinstance(formset, DependencyFormSet):
                flag_dependencies_set(
                    name=form.instance.name, dependencies=formset.documents(), actor=Actor.for_user(request.user)
                )
                # The admin's change message reads these; the service, not the formset, saved the rows.
                formset.new_objects, formset.changed_objects, formset.deleted_objects = [], [], []

    def get_deleted_objects(self, objs: Any, request: HttpRequest) -> Any:
        # A flag's states go with it (they cannot be deleted on their own, so nobody holds that permission).
        deleted, counts, perms_needed, protected = super().get_deleted_objects(objs, request)
        perms_needed = {p for p in perms_needed if p not in (FlagState._meta.verbose_name, Strategy._meta.verbose_name)}
        return deleted, counts, perms_needed, protected

    def delete_model(self, request: HttpRequest, obj: Flag) -> None:
        flag_delete(name=obj.name, actor=Actor.for_user(request.user))

    def delete_queryset(self, request: HttpRequest, queryset: Any) -> None:
        for flag in queryset:
            self.delete_model(request, flag)

    def get_list_display(self, request: HttpRequest) -> Any:
        # The flag x environment matrix: a column per environment, each with its one-click button.
        environments = list(Environment.objects.order_by("position", "name"))
        return ["name", "type", *(_environment_cell(env) for env in environments), "owner", "modified"]

    def get_urls(self) -> list[Any]:
        toggle = path(
            "<path:object_id>/toggle/", self.admin_site.admin_view(self.toggle_view), name="flags_flag_toggle"
        )
        return [toggle, *super().get_urls()]

    def toggle_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """The matrix's button: ``set=<environment>:<1|0>`` (or, from the confirmation, ``environment``,
        ``enabled`` and ``confirm=yes``). In a production environment nothing changes until confirmed;
        the confirmation posts the state to set, so a flag someone else changed meanwhile is not flipped back."""
        changelist = reverse("admin:flags_flag_changelist")
        if request.method != "POST":
            return HttpResponseRedirect(changelist)
        flag = self.get_object(request, object_id)
        if flag is None or not self.has_change_permission(request, flag):
            raise PermissionDenied("changing flags needs the flags.change_flag permission")
        env_name, _, wanted = (request.POST.get("set") or "").partition(":")
        if not env_name:
            env_name, wanted = request.POST.get("environment", ""), request.POST.get("enabled", "")
        env = Environment.objects.filter(name=env_name).first()
        if env is None or wanted not in ("0", "1"):
            self.message_user(
                request, f"No such change: environment {env_name!r}, on or off {wanted!r}.", messages.ERROR
            )
            return HttpResponseRedirect(changelist)
        enabled = wanted == "1"
        if env.production and request.POST.get("confirm") != "yes":
            context = {
                **self.admin_site.each_context(request),
                "opts": self.model._meta,
                "title": f"Turn {'on' if enabled else 'off'} {flag.name} in {env.name}?",
                "flag": flag,
                "environment": env,
                "enabled": enabled,
                "on_for": on_for(compiled_of(flag, env.name)),
            }
            return TemplateResponse(request, "admin/flags/flag/confirm_toggle.html", context)
        flag_toggle(
            name=flag.name, changes={"enabled": enabled}, actor=Actor.for_user(request.user), environment=env.name
        )
        self.message_user(request, f"{flag.name} is now {'on' if enabled else 'off'} in {env.name}.", messages.SUCCESS)
        return HttpResponseRedirect(changelist)

    def _environment_of(self, request: HttpRequest) -> Environment | None:
        name = request.POST.get("environment") or DEFAULT_FLAGS_ENVIRONMENT
        env = Environment.objects.filter(name=name).first()
        if env is None:
            self.message_user(request, f"No environment named {name}.", messages.ERROR)
        return env

    def _update_each(
        self, request: HttpRequest, queryset: Any, changes: dict[str, Any], done: str
    ) -> HttpResponse | None:
        """Apply ``changes`` to each selected flag in the chosen environment; in a production one,
        only after a page listing the flags and what changes has been confirmed."""
        env = self._environment_of(request)
        if env is None:
            return None
        if env.production and request.POST.get("confirm") != "yes":
            context = {
                **self.admin_site.each_context(request),
                "opts": self.model._meta,
                "title": f"{done} in {env.name}?",
                "queryset": queryset,
                "environment": env,
                "done": done,
                "action": request.POST.get("action", ""),
                "rollout_percent": request.POST.get("rollout_percent", ""),
                "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
                "rows": [(flag, on_for(compiled_of(flag, env.name))) for flag in queryset],
            }
            return TemplateResponse(request, "admin/flags/flag/confirm_action.html", context)
        actor = Actor.for_user(request.user)
        for flag in queryset:
            flag_update(name=flag.name, changes=changes, actor=actor, environment=env.name)
        self.message_user(request, f"{done} {queryset.count()} flag(s) in {env.name}.", messages.SUCCESS)
        return None

    @admin.action(description="Turn on the selected flags", permissions=["change"])
    def enable(self, request: HttpRequest, queryset: Any) -> HttpResponse | None:
        return self._update_each(request, queryset, {"enabled": True}, "Turn on")

    @admin.action(description="Turn off the selected flags", permissions=["change"])
    def disable(self, request: HttpRequest, queryset: Any) -> HttpResponse | None:
        return self._update_each(request, queryset, {"enabled": False}, "Turn off")

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
                "environment": request.POST.get("environment") or DEFAULT_FLAGS_ENVIRONMENT,
            }
            return TemplateResponse(request, "admin/flags/flag/set_rollout.html", context)
        return self._update_each(request, queryset, {"rollout_percent": percent}, f"Set the rollout to {percent} % on")

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict | None = None
    ) -> HttpResponse:
        extra_context = {
            **(extra_context or {}),
            "history": flag_history(int(object_id)) if object_id.isdigit() else [],
        }
        return super().change_view(request, object_id, form_url, extra_context)


# --- States, strategies, constraints, variants, segments ------------------------------------------------
# Edited as forms: each constraint is checked against its operator by the engine's Constraint (a semver
# that is not one is an error naming it) and each variant value against the flag's type, before
# anything is saved. Django's inline formsets save the rows; ``flag_state_saved`` / ``segment_saved``
# then check the whole state, audit before and after, and publish, inside the admin's transaction.


class ConstraintForm(forms.ModelForm):
    values = LinesField(required=False, help_text="One value per line.")

    class Meta:
        model = Constraint
        fields = ["position", "field", "operator", "values", "case_insensitive", "inverted"]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if self.errors or not data.get("operator"):
            return data
        doc = {key: data.get(key) for key in docs.CONSTRAINT_KEYS}
        doc["values"] = data.get("values") or []
        try:
            docs.clean_constraint(doc, "constraint")
        except docs.DocumentError as exc:
            field = exc.field.split(".")[1] if "." in exc.field else None
            field = "values" if field == "value" else field
            self.add_error(field if field in self.fields else None, exc.message)
        return data


def _flag_type(instance: Any) -> str:
    state = getattr(instance, "state", None)
    if state is None and getattr(instance, "strategy", None) is not None:
        state = instance.strategy.state
    return state.flag.type if state is not None else FlagType.BOOLEAN


class VariantForm(forms.ModelForm):
    """The value is typed in as the flag's type reads it: text for a string, a number, true or false,
    a JSON object or list for an object flag."""

    value = forms.CharField(required=False, help_text="Of the flag's type: text, a number, true/false, or JSON.")
    overrides = OverridesField(required=False, help_text="field=value, value per line: always this variant.")

    class Meta:
        model = Variant
        fields = ["position", "name", "value", "weight", "stickiness", "overrides"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        value = self.instance.value
        if value is not None and not isinstance(value, str):
            self.initial["value"] = json.dumps(value)

    def clean_value(self) -> Any:
        raw = self.cleaned_data.get("value", "")
        kind = _flag_type(self.instance)
        if raw == "" and kind != FlagType.STRING:
            return None
        if kind == FlagType.STRING:
            return raw
        try:
            value = json.loads(raw)
        except ValueError:
            raise forms.ValidationError(f"{raw!r} is not a {kind} value") from None
        ok = {
            FlagType.BOOLEAN: isinstance(value, bool),
            FlagType.NUMBER: isinstance(value, int | float) and not isinstance(value, bool),
            FlagType.OBJECT: isinstance(value, dict | list),
        }[FlagType(kind)]
        if not ok:
            raise forms.ValidationError(f"{raw!r} is not a {kind} value")
        return value


class StrategyForm(forms.ModelForm):
    user_ids = LinesField(required=False, help_text="Named users (userWithId), one per line.")
    parameters = ParametersField(required=False, help_text="IPs=… or hostNames=… (comma-separated).")

    class Meta:
        model = Strategy
        fields = [
            "position",
            "kind",
            "title",
            "rollout",
            "stickiness",
            "group_id",
            "user_ids",
            "parameters",
            "segments",
        ]


class StrategyPageForm(StrategyForm):
    """A strategy's own page: its fields, and the time to apply the edit at instead of now."""

    apply_at = _apply_at_field()


class StateVariantInline(admin.TabularInline):
    model = Variant
    fk_name = "state"
    form = VariantForm
    extra = 0
    verbose_name = "variant (of the flag in this environment)"


class StrategyInline(admin.StackedInline):
    model = Strategy
    form = StrategyForm
    extra = 0
    show_change_link = True  # its constraints and variants are edited on its own page
    filter_horizontal = ["segments"]


class StateAuditMixin:
    """Reads the state before the forms save and records it after (flag_state_saved).

    With a time in ``apply_at`` the edit is scheduled instead: the forms save inside a savepoint, the
    state they make is checked whole and read as a document, the savepoint is rolled back (nothing
    changed, nothing published) and the document becomes a scheduled state change, applied by beat
    only if the state is still what it is now (flags.schedules).

    ``state_attribute`` names the edited object's state ("" when the object is the state itself).
    """

    state_attribute = ""

    def _state_of(self, obj: Any) -> FlagState:
        state: FlagState = getattr(obj, self.state_attribute) if self.state_attribute else obj
        return state

    def changeform_view(
        self, request: HttpRequest, object_id: str | None = None, form_url: str = "", extra_context: Any = None
    ) -> HttpResponse:
        request._flag_state_before = None  # type: ignore[attr-defined]
        request._flag_scheduled = None  # type: ignore[attr-defined]
        if object_id is not None and request.method == "POST":
            obj = self.get_object(request, object_id)  # type: ignore[attr-defined]
            if obj is not None:
                request._flag_state_before = state_before(self._state_of(obj))  # type: ignore[attr-defined]
        return super().changeform_view(request, object_id, form_url, extra_context)  # type: ignore[misc]

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        at = form.cleaned_data.get("apply_at")
        if at is not None:
            request._flag_savepoint = (transaction.savepoint(), at)  # type: ignore[attr-defined]
        super().save_model(request, obj, form, change)  # type: ignore[misc]

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        super().save_related(request, form, formsets, change)  # type: ignore[misc]
        state = FlagState.objects.select_related("flag", "environment").get(pk=self._state_of(form.instance).pk)
        savepoint = getattr(request, "_flag_savepoint", None)
        actor = Actor.for_user(request.user)
        try:
            if savepoint is None:
                flag_state_saved(state=state, before=request._flag_state_before, actor=actor)  # type: ignore[attr-defined]
                return
            sid, at = savepoint
            try:
                document = state_checked(state)
            finally:
                transaction.savepoint_rollback(sid)
            request._flag_scheduled = schedule_change(  # type: ignore[attr-defined]
                name=state.flag.name,
                environment=state.environment.name,
                at=at,
                kind=ScheduledChangeKind.STATE,
                payload={"state": document},
                actor=actor,
            )
        except (InvalidFlagDefinition, InvalidSchedule) as error:
            raise forms.ValidationError(str(error)) from None

    def log_change(self, request: HttpRequest, obj: Any, message: Any) -> Any:
        if getattr(request, "_flag_scheduled", None) is not None:
            return None  # nothing changed; the audit holds the scheduling
        return super().log_change(request, obj, message)  # type: ignore[misc]

    def message_user(self, request: HttpRequest, message: Any, *args: Any, **kwargs: Any) -> None:
        scheduled = getattr(request, "_flag_scheduled", None)
        if scheduled is not None:
            message = (
                f"Nothing changed now: the edit of {scheduled.flag.name} in {scheduled.environment.name} is scheduled "
                f"for {scheduled.at:%Y-%m-%d %H:%M} UTC (change #{scheduled.pk}, cancellable on the flag's page)."
            )
        super().message_user(request, message, *args, **kwargs)  # type: ignore[misc]


class FlagStateForm(forms.ModelForm):
    apply_at = _apply_at_field()

    class Meta:
        model = FlagState
        fields = ["enabled"]


@admin.register(FlagState)
class FlagStateAdmin(StateAuditMixin, admin.ModelAdmin):
    list_display = ["flag", "environment", "enabled", "modified"]
    list_filter = ["environment", "enabled"]
    search_fields = ["flag__name"]
    form = FlagStateForm
    fields = ["flag", "environment", "enabled", "apply_at"]
    readonly_fields = ["flag", "environment"]
    inlines = [StrategyInline, StateVariantInline]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # a flag gets its states when it is made

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # deleting the flag deletes them


class ConstraintInline(admin.TabularInline):
    model = Constraint
    form = ConstraintForm
    extra = 0


class StrategyConstraintInline(ConstraintInline):
    fk_name = "strategy"


class StrategyVariantInline(admin.TabularInline):
    model = Variant
    fk_name = "strategy"
    form = VariantForm
    extra = 0
    verbose_name = "variant (of this strategy)"


@admin.register(Strategy)
class StrategyAdmin(StateAuditMixin, admin.ModelAdmin):
    form = StrategyPageForm
    list_display = ["__str__", "state", "kind", "rollout"]
    list_filter = ["kind", "state__environment"]
    search_fields = ["state__flag__name"]
    readonly_fields = ["state"]
    fields = [
        "state",
        "position",
        "kind",
        "title",
        "rollout",
        "stickiness",
        "group_id",
        "user_ids",
        "parameters",
        "segments",
        "apply_at",
    ]
    filter_horizontal = ["segments"]
    inlines = [StrategyConstraintInline, StrategyVariantInline]
    state_attribute = "state"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # added on its state's page

    def delete_model(self, request: HttpRequest, obj: Strategy) -> None:
        state = obj.state
        before = state_before(state)
        obj.delete()
        flag_state_saved(state=state, before=before, actor=Actor.for_user(request.user))

    def delete_queryset(self, request: HttpRequest, queryset: Any) -> None:
        for strategy in queryset:
            self.delete_model(request, strategy)


class SegmentConstraintInline(ConstraintInline):
    fk_name = "segment"


@admin.register(Segment)
class SegmentAdmin(admin.ModelAdmin):
    list_display = ["name", "description", "used_by", "modified"]
    search_fields = ["name", "description"]
    fields = ["name", "description", "used_by"]
    readonly_fields = ["used_by"]
    inlines = [SegmentConstraintInline]

    @admin.display(description="used by")
    def used_by(self, segment: Segment) -> str:
        """The flags (and environments) whose strategies use it: a change here changes them all."""
        if segment.pk is None:
            return "—"
        states = sorted(
            {
                (s.state.flag.name, s.state.environment.name)
                for s in segment.strategies.select_related("state__flag", "state__environment")
            }
        )
        if not states:
            return "no flag"
        return format_html_join(
            ", ",
            '<a href="{}">{}</a> ({})',
            ((reverse("admin:flags_flag_change", args=[_flag_pk(n)]), n, e) for n, e in states),
        )

    def changeform_view(
        self, request: HttpRequest, object_id: str | None = None, form_url: str = "", extra_context: Any = None
    ) -> HttpResponse:
        request._segment_before = None  # type: ignore[attr-defined]
        if object_id is not None and request.method == "POST":
            obj = self.get_object(request, object_id)
            if obj is not None:
                request._segment_before = docs.segment_doc(obj)  # type: ignore[attr-defined]
        return super().changeform_view(request, object_id, form_url, extra_context)

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        super().save_related(request, form, formsets, change)
        segment_saved(
            segment=form.instance,
            before=request._segment_before,  # type: ignore[attr-defined]
            actor=Actor.for_user(request.user),
            action="segment.update" if change else "segment.create",
        )

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Deleting a segment a strategy uses would drop its constraints from that strategy (the flag
        # would turn on for more users): it is taken out of the strategies first.
        if obj is not None and obj.strategies.exists():
            return False
        return super().has_delete_permission(request, obj)

    def delete_model(self, request: HttpRequest, obj: Segment) -> None:
        segment_deleted(segment=obj, actor=Actor.for_user(request.user))

    def delete_queryset(self, request: HttpRequest, queryset: Any) -> None:
        for segment in queryset:
            try:
                self.delete_model(request, segment)
            except InvalidFlagDefinition as error:
                self.message_user(request, f"{segment.name} is kept: {error.message}", messages.ERROR)


def _flag_pk(name: str) -> int:
    return Flag.objects.values_list("pk", flat=True).get(name=name)


@admin.register(ScheduledChange)
class ScheduledChangeAdmin(admin.ModelAdmin):
    """Read-only: changes are scheduled on the flag's page; here pending ones can be cancelled."""

    list_display = ["flag", "environment", "at", "kind", "status", "created_by", "applied_at", "note"]
    list_filter = ["status", "kind", "environment"]
    search_fields = ["flag__name", "created_by"]
    list_select_related = ["flag", "environment"]
    actions = ["cancel"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [f.name for f in self.model._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # The list's cancel action needs it; a change's own page stays read-only.
        return obj is None and super().has_change_permission(request, obj)

    @admin.action(description="Cancel the selected pending changes", permissions=["change"])
    def cancel(self, request: HttpRequest, queryset: Any) -> None:
        actor = Actor.for_user(request.user)
        cancelled = 0
        for change_id in queryset.filter(status=ScheduledChangeStatus.PENDING).values_list("pk", flat=True):
            try:
                cancel_change(change_id=change_id, actor=actor)
                cancelled += 1
            except ScheduledChangeNotFound:
                pass  # applied or cancelled meanwhile
        self.message_user(request, f"{cancelled} pending change(s) cancelled.", messages.SUCCESS)
