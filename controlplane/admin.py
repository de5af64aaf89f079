from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from weakref import WeakKeyDictionary

from django import forms
from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import GroupAdmin, UserAdmin
from django.contrib.auth.models import Group
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils.html import format_html

from controlplane.audit import Actor, audit_record, describe_change, snapshot
from controlplane.forms import add_to_form
from controlplane.models import ApiToken, AuditEvent, Environment, Scope
from controlplane.services import (
    MAX_EXPIRES_IN_DAYS,
    MIN_EXPIRES_IN_DAYS,
    InvalidTokenRequest,
    api_token_create,
    api_token_revoke,
    clean_expires_in_days,
    clean_token_environment,
    clean_token_name,
    parse_scopes,
)


class ReadOnlyAdminMixin:
    """Rows the control plane writes itself (audit events, deliveries, metrics): shown, never edited,
    added or deleted in admin."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class ReadOnlyInlineMixin:
    """Rows shown under their parent (verifications, step runs, deliveries): never added or edited there."""

    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


# Per request, not on the admin: one admin instance serves every thread. What save_model saw before
# the save, for save_related to record with the many-to-many fields; the raw token for response_add.
_pending_audit: WeakKeyDictionary[HttpRequest, tuple[dict[str, Any] | None, str]] = WeakKeyDictionary()
_created_tokens: WeakKeyDictionary[HttpRequest, str] = WeakKeyDictionary()


class AuditedAdminMixin(admin.ModelAdmin):
    """Records an audit event, with before and after, for each save and delete made in admin.

    For models that have no service of their own (users, groups); models with a service call it.
    """

    audit_exclude: tuple[str, ...] = ()

    def _snapshot(self, obj: Any) -> dict:
        return snapshot(obj, exclude=list(self.audit_exclude))

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        with transaction.atomic():
            before = self._snapshot(type(obj).objects.get(pk=obj.pk)) if change else None
            super().save_model(request, obj, form, change)
        _pending_audit[request] = (before, "change" if change else "create")

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        # Many-to-many fields (groups, permissions) are saved here, after save_model.
        super().save_related(request, form, formsets, change)
        before, verb = _pending_audit.pop(request, (None, "change"))
        obj = form.instance
        audit_record(
            actor=Actor.for_user(request.user),
            action=f"{obj._meta.model_name}.{verb}",
            obj=obj,
            before=before,
            after=self._snapshot(obj),
        )

    def delete_model(self, request: HttpRequest, obj: Any) -> None:
        with transaction.atomic():
            audit_record(
                actor=Actor.for_user(request.user),
                action=f"{obj._meta.model_name}.delete",
                obj=obj,
                before=self._snapshot(obj),
            )
            super().delete_model(request, obj)

    def delete_queryset(self, request: HttpRequest, queryset: Any) -> None:
        with transaction.atomic():
            for obj in queryset:
                self.delete_model(request, obj)


User = get_user_model()
admin.site.unregister(User)
admin.site.unregister(Group)


@admin.register(User)
class AuditedUserAdmin(AuditedAdminMixin, UserAdmin):
    audit_exclude = ("password",)

    def user_change_password(self, request: HttpRequest, id: str, form_url: str = "") -> HttpResponse:
        """The password form saves without save_model: audited here, the password itself never recorded."""
        response = super().user_change_password(request, id, form_url)
        _audit_password_change(request, response, lambda: self.get_object(request, id))
        return response


@admin.register(Group)
class AuditedGroupAdmin(AuditedAdminMixin, GroupAdmin):
    pass


def _audit_password_change(request: HttpRequest, response: HttpResponse, user: Any) -> None:
    """A password form that redirected after a POST saved a new password: recorded, never the password."""
    if request.method == "POST" and response.status_code == 302:
        audit_record(actor=Actor.for_user(request.user), action="user.password_change", obj=user())


def _audited_own_password_change(view: Any) -> Any:
    """The admin's "Change password" link (an operator's own password): audited like the user admin's."""

    def password_change(request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        response = view(request, extra_context)
        _audit_password_change(request, response, lambda: request.user)
        return response

    return password_change


# A patch of the default site's view, which mypy rightly refuses as an assignment to a method.
setattr(admin.site, "password_change", _audited_own_password_change(admin.site.password_change))  # noqa: B010


# --- Other apps' admins, audited ----------------------------------------------------------------


def _audited_switch_action(active: bool) -> Any:
    @admin.action(description=f"{'Enable' if active else 'Disable'} selected switches", permissions=["change"])
    def action(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: Any) -> None:
        for switch in queryset:
            with transaction.atomic():
                before = snapshot(switch)
                switch.active = active
                switch.save()
                audit_record(
                    actor=Actor.for_user(request.user),
                    action="switch.change",
                    obj=switch,
                    before=before,
                    after=snapshot(switch),
                )

    action.__name__ = "enable_switches" if active else "disable_switches"
    return action


@admin.action(description="Delete selected", permissions=["delete"])
def delete_audited(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: Any) -> None:
    modeladmin.delete_queryset(request, queryset)  # one audit event per object (AuditedAdminMixin)


def _reregister_audited(model: Any, **overrides: Any) -> None:
    """django-axes' attempts and logs (deleting an attempt lifts a lockout) and waffle's switches and
    samples: their own admins, with every save and delete audited like the control plane's own."""
    current = admin.site._registry.get(model)
    if current is None:  # that app's admin pages are turned off
        return
    admin.site.unregister(model)
    name = f"Audited{type(current).__name__}"
    admin.site.register(model, type(name, (AuditedAdminMixin, type(current)), overrides))


def _audit_other_admins() -> None:
    from axes.models import AccessAttempt, AccessFailureLog, AccessLog
    from waffle.models import Sample, Switch

    # Without axes' "clean up expired attempts" action: it deletes through axes' handler, unaudited
    # (the audited delete action does the same for the rows selected).
    _reregister_audited(AccessAttempt, actions=[])
    for model in (AccessLog, AccessFailureLog):
        _reregister_audited(model)
    _reregister_audited(Switch, actions=[_audited_switch_action(True), _audited_switch_action(False), delete_audited])
    _reregister_audited(Sample, actions=[delete_audited])


_audit_other_admins()


@admin.register(Environment)
class EnvironmentAdmin(AuditedAdminMixin, admin.ModelAdmin):
    """The one list of environments. Every save and delete is audited; an environment a token, a
    deployment target or a recovery plan points at cannot be deleted (PROTECT: admin lists what holds it)."""

    list_display = ["name", "description", "production", "position"]
    list_editable = ["description", "production", "position"]
    search_fields = ["name", "description"]
    fields = ["name", "description", "production", "position"]
    # Django's own delete action and page: both refuse, naming them, when protected rows point here.

    def get_deleted_objects(self, objs: Any, request: HttpRequest) -> Any:
        """What holds an environment is listed as protected (nothing is deleted with it), rather than as
        rows the operator may not delete (token rows are never deleted), which would read as a permission
        problem."""
        deleted, model_count, perms_needed, protected = super().get_deleted_objects(objs, request)
        return deleted, model_count, (set() if protected else perms_needed), protected

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        # Tokens, SDKs, pipelines and `manage.py deploy <env>` name it: a new name is a new environment.
        return ["name"] if obj is not None else []


class ApiTokenCreateForm(forms.ModelForm):
    scopes = forms.MultipleChoiceField(choices=Scope.choices, widget=forms.CheckboxSelectMultiple)
    expires_in_days = forms.IntegerField(
        required=False,
        min_value=MIN_EXPIRES_IN_DAYS,
        max_value=MAX_EXPIRES_IN_DAYS,
        help_text="Leave empty for a token that does not expire.",
    )
    environment = forms.ModelChoiceField(
        queryset=Environment.objects.all(),
        required=False,
        to_field_name="name",
        help_text="Whose flag states a flags:read token reads; production when empty. Other scopes: leave empty.",
    )

    class Meta:
        model = ApiToken
        fields = ["name"]

    def clean(self) -> dict[str, Any]:
        """The service's own rules, so that what the form lets through the service takes."""
        super().clean()
        data = self.cleaned_data
        checks: list[tuple[str, Callable[[Any], Any]]] = [
            ("name", clean_token_name),
            ("scopes", parse_scopes),
            ("expires_in_days", clean_expires_in_days),
        ]
        for name, check in checks:
            if name in data:
                try:
                    data[name] = check(data[name])
                except InvalidTokenRequest as error:
                    add_to_form(self, error)
        if "scopes" in data and "environment" in data:
            try:
                data["environment"] = clean_token_environment(data["scopes"], data["environment"])
            except InvalidTokenRequest as error:
                add_to_form(self, error)
        return data


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = [
        "name", "prefix", "scope_list", "environment", "state", "created_at", "created_by", "expires_at",
        "last_used_at",
    ]  # fmt: skip
    list_filter = ["revoked_at", "expires_at", "environment"]
    search_fields = ["name", "prefix"]
    actions = ["revoke"]
    readonly_fields = [
        "name", "prefix", "scopes", "environment", "created_at", "created_by", "expires_at", "last_used_at",
        "revoked_at",
    ]  # fmt: skip

    def get_form(
        self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any
    ) -> type[forms.ModelForm[Any]]:
        if obj is None:
            kwargs["form"] = ApiTokenCreateForm
        return super().get_form(request, obj, change, **kwargs)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return self.readonly_fields if obj is not None else []

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return self.readonly_fields if obj is not None else ["name", "scopes", "environment", "expires_in_days"]

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # revoke instead: the audit trail keeps pointing at the token

    @admin.display(description="scopes")
    def scope_list(self, token: ApiToken) -> str:
        return ", ".join(token.scopes)

    @admin.display(description="state")
    def state(self, token: ApiToken) -> str:
        return "revoked" if token.is_revoked else "expired" if token.is_expired else "active"

    def save_model(self, request: HttpRequest, obj: ApiToken, form: Any, change: bool) -> None:
        if change:
            return  # nothing of a token is edited after it is made
        # The form's clean already ran the service's checks (name, known scopes, days).
        token, raw = api_token_create(
            name=form.cleaned_data["name"],
            scopes=form.cleaned_data["scopes"],
            expires_in_days=form.cleaned_data.get("expires_in_days"),
            environment=form.cleaned_data.get("environment"),
            actor=Actor.for_user(request.user),
        )
        obj.__dict__.update({f.attname: getattr(token, f.attname) for f in ApiToken._meta.concrete_fields})
        obj._state.adding = False
        _created_tokens[request] = raw  # shown once by response_add, stored nowhere

    def response_add(self, request: HttpRequest, obj: ApiToken, post_url_continue: Any = None) -> HttpResponse:
        raw = _created_tokens.pop(request, None)
        if raw is None:
            return super().response_add(request, obj, post_url_continue)
        context = {**self.admin_site.each_context(request), "token": obj, "raw": raw, "opts": self.opts}
        return TemplateResponse(request, "admin/controlplane/apitoken/created.html", context)

    @admin.action(description="Revoke the selected tokens", permissions=["change"])
    def revoke(self, request: HttpRequest, queryset: Any) -> None:
        for token in queryset:
            api_token_revoke(token=token, actor=Actor.for_user(request.user))
        self.message_user(request, f"Revoked {queryset.count()} token(s).", messages.SUCCESS)


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Read-only: nobody edits or deletes the audit trail here."""

    list_display = ["time", "actor_label", "action", "object_type", "object_label", "change", "request_id"]
    list_filter = ["actor_type", "actor_user", "actor_token", "action", "object_type", "time"]
    search_fields = ["actor_label", "action", "object_type", "object_id", "object_label", "request_id"]
    date_hierarchy = "time"
    list_select_related = False
    fields = readonly_fields = (
        "time", "actor_type", "actor_label", "actor_user", "actor_token", "action", "object_type", "object_id",
        "object_label", "change_full", "before_json", "after_json", "request_id",
    )  # fmt: skip
    # The list's long cells wrap and its change column is cut (admin/controlplane/auditevent/change_list.html).
    CHANGE_LIST_LENGTH = 160

    def get_actions(self, request: HttpRequest) -> dict:
        return {}

    @admin.display(description="change")
    def change(self, event: AuditEvent) -> str:
        words = describe_change(event.before, event.after, event.action)
        if len(words) <= self.CHANGE_LIST_LENGTH:
            return words
        return format_html('<span title="{}">{}…</span>', words, words[: self.CHANGE_LIST_LENGTH])

    @admin.display(description="change")
    def change_full(self, event: AuditEvent) -> str:
        return describe_change(event.before, event.after, event.action) or "—"

    @admin.display(description="before")
    def before_json(self, event: AuditEvent) -> str:
        return format_html("<pre>{}</pre>", json.dumps(event.before, indent=2, sort_keys=True))

    @admin.display(description="after")
    def after_json(self, event: AuditEvent) -> str:
        return format_html("<pre>{}</pre>", json.dumps(event.after, indent=2, sort_keys=True))
