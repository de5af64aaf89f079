"""Operator screens for alerting. Every write goes through alerting.services (validated, audited)."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from alerting.models import (
    Alert,
    AlertRule,
    AlertState,
    Delivery,
    NotificationChannel,
    Silence,
)
from alerting.services import (
    CHANNEL_FIELDS,
    QUIET_FLAG_ENVIRONMENT,
    RULE_FIELDS,
    alert_acknowledge,
    channel_create,
    channel_delete,
    channel_send_test,
    channel_update,
    rule_create,
    rule_delete,
    rule_update,
    silence_create,
    silence_delete,
    silence_end,
)
from controlplane.admin import ReadOnlyAdminMixin, ReadOnlyInlineMixin
from controlplane.audit import Actor
from controlplane.changes import changes_before
from controlplane.models import Environment
from controlplane.status import StatusPillsAdmin, admin_status


class RecipientsField(forms.Field):
    """E-mail addresses, one per line (commas work too): text in the form, a list once cleaned."""

    widget = forms.Textarea(attrs={"rows": 3})

    def prepare_value(self, value: Any) -> Any:
        return "\n".join(value) if isinstance(value, list) else value

    def to_python(self, value: Any) -> list[str]:
        text = "" if value in self.empty_values else str(value)
        return [part.strip() for part in text.replace(",", "\n").splitlines() if part.strip()]

    def validate(self, value: Any) -> None:
        for address in value:
            try:
                validate_email(address)
            except ValidationError:
                raise ValidationError(f"{address!r} is not an e-mail address") from None


class ChannelForm(forms.ModelForm):
    # The URL of a Slack webhook is its credential: never rendered back into the page.
    url = forms.CharField(
        required=False,
        max_length=500,
        widget=forms.PasswordInput(render_value=False, attrs={"size": 80, "autocomplete": "off"}),
        help_text="http:// or https:// only. Not shown again once saved; leave empty to keep the current URL.",
    )
    email_recipients = RecipientsField(required=False, help_text="For e-mail channels: one address per line.")
    flag_change_environments = forms.MultipleChoiceField(
        required=False,
        widget=forms.CheckboxSelectMultiple,
        label="Tell of flag changes in",
        help_text="A message naming the flag, the environment, before -> after and who, for each change there.",
    )

    class Meta:
        model = NotificationChannel
        fields = list(CHANNEL_FIELDS)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        names = list(Environment.objects.order_by("position", "name").values_list("name", flat=True))
        field = self.fields["flag_change_environments"]
        assert isinstance(field, forms.MultipleChoiceField)
        field.choices = [(name, name) for name in names]
        if not self.instance.pk:
            field.initial = [name for name in names if name != QUIET_FLAG_ENVIRONMENT]
        if self.instance.pk and self.instance.url:
            self.fields["url"].help_text = f"Now: {self.instance.masked_url}. " + self.fields["url"].help_text

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data
        if not data.get("url") and self.instance.pk:
            data["url"] = self.instance.url  # kept: the field is never filled in on change
        return data


def _form_values(form: forms.ModelForm, names: tuple[str, ...]) -> dict[str, Any]:
    return {name: form.cleaned_data[name] for name in names if name in form.cleaned_data}


@admin.register(NotificationChannel)
class NotificationChannelAdmin(admin.ModelAdmin):
    form = ChannelForm
    list_display = ["name", "kind", "target", "enabled", "created_at"]
    list_filter = ["kind", "enabled"]
    search_fields = ["name"]
    actions = ["send_test"]

    @admin.display(description="destination")
    def target(self, channel: NotificationChannel) -> str:
        return channel.target

    def save_model(self, request: HttpRequest, obj: NotificationChannel, form: Any, change: bool) -> None:
        actor = Actor.for_user(request.user)
        values = _form_values(form, CHANNEL_FIELDS)
        if change:
            saved = channel_update(channel=obj, changes=values, actor=actor)
        else:
            saved = channel_create(data=values, actor=actor)
        obj.pk = saved.pk
        obj._state.adding = False

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        pass  # the service saved everything

    def delete_model(self, request: HttpRequest, obj: NotificationChannel) -> None:
        channel_delete(channel=obj, actor=Actor.for_user(request.user))

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet) -> None:
        for channel in queryset:
            self.delete_model(request, channel)

    @admin.action(description="Send a test notification to the selected channels", permissions=["change"])
    def send_test(self, request: HttpRequest, queryset: QuerySet) -> None:
        actor = Actor.for_user(request.user)
        for channel in queryset:
            delivery = channel_send_test(channel=channel, actor=actor)
            if delivery.last_error:
                self.message_user(request, f"{channel}: not sent ({delivery.last_error}).", messages.WARNING)
            else:
                self.message_user(
                    request, f"{channel}: test notification queued; see the delivery log.", messages.SUCCESS
                )


class RuleForm(forms.ModelForm):
    class Meta:
        model = AlertRule
        fields = [*RULE_FIELDS, "channels"]
        widgets = {"channels": forms.CheckboxSelectMultiple}


@admin.register(AlertRule)
class AlertRuleAdmin(admin.ModelAdmin):
    form = RuleForm
    list_display = ["name", "condition", "severity", "for_evaluations", "repeat_interval_minutes", "enabled"]
    list_filter = ["kind", "severity", "enabled"]
    search_fields = ["name", "component", "description"]

    @admin.display(description="condition")
    def condition(self, rule: AlertRule) -> str:
        return rule.condition

    def save_model(self, request: HttpRequest, obj: AlertRule, form: Any, change: bool) -> None:
        actor = Actor.for_user(request.user)
        values = _form_values(form, (*RULE_FIELDS, "channels"))
        values["channels"] = list(values.get("channels") or [])
        if change:
            saved = rule_update(rule=obj, changes=values, actor=actor)
        else:
            saved = rule_create(data=values, actor=actor)
        obj.pk = saved.pk
        obj._state.adding = False

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        pass  # the service set the channels

    def delete_model(self, request: HttpRequest, obj: AlertRule) -> None:
        rule_delete(rule=obj, actor=Actor.for_user(request.user))

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet) -> None:
        for rule in queryset:
            self.delete_model(request, rule)


class DeliveryInline(ReadOnlyInlineMixin, admin.TabularInline):
    model = Delivery
    fields = readonly_fields = ("created_at", "event", "channel", "status", "attempts", "response_status", "last_error")
    show_change_link = True


@admin.register(Alert)
class AlertAdmin(StatusPillsAdmin, ReadOnlyAdminMixin, admin.ModelAdmin):
    """Read-only: alerts change state by evaluation; operators acknowledge them."""

    list_display = [
        "rule", "target", admin_status("state"), "severity", "last_value", "started_at", "fired_at", "resolved_at",
        "acknowledged_by", "last_notified_at",
    ]  # fmt: skip
    list_filter = ["state", "rule__severity", "rule"]
    search_fields = ["dedup_key", "component", "rule__name"]
    list_select_related = ["rule", "acknowledged_by"]
    date_hierarchy = "started_at"
    actions = ["acknowledge"]
    inlines = [DeliveryInline]
    fields = readonly_fields = (
        "rule", "dedup_key", "component", "measurement", "state", "started_at", "fired_at", "resolved_at",
        "last_evaluated_at", "last_value", "consecutive", "acknowledged_by", "acknowledged_at", "last_notified_at",
        "recovery", "changes_before",
    )  # fmt: skip

    @admin.display(description="recovery plan")
    def recovery(self, alert: Alert) -> str:
        """The rule's recovery plan: a link to run it (its dry run first), and whether it ran by itself."""
        if not alert.rule.recovery_plan:
            return "-"
        link = format_html('<a class="run-plan" href="{}">run {}</a>', alert.recovery_url, alert.rule.recovery_plan)
        if alert.recovery_started_at is not None:
            return format_html("{} (started by itself at {:%Y-%m-%d %H:%M:%S})", link, alert.recovery_started_at)
        return format_html("{} (runs by itself when it fires)", link) if alert.rule.recovery_auto else link

    @admin.display(description="changes in the hour before it fired")
    def changes_before(self, alert: Alert) -> str:
        """Deployments, flag changes... of the hour before it fired (controlplane.changes): what moved."""
        if alert.fired_at is None:
            return "not fired"
        changes = changes_before({alert.pk: alert.fired_at})[alert.pk]
        if not changes:
            return "none"
        return format_html(
            '<ul class="changes">{}</ul>', format_html_join("", "<li>{}</li>", ((c.words,) for c in changes))
        )

    @admin.display(description="target")
    def target(self, alert: Alert) -> str:
        return f"{alert.component}:{alert.measurement}" if alert.component else "-"

    @admin.display(description="severity", ordering="rule__severity")
    def severity(self, alert: Alert) -> str:
        return alert.rule.severity

    def has_acknowledge_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("alerting.change_alert")

    @admin.action(description="Acknowledge the selected alerts", permissions=["acknowledge"])
    def acknowledge(self, request: HttpRequest, queryset: QuerySet) -> None:
        actor = Actor.for_user(request.user)
        done = 0
        for alert in queryset.exclude(state=AlertState.RESOLVED).filter(acknowledged_at__isnull=True):
            alert_acknowledge(alert=alert, actor=actor)
            done += 1
        self.message_user(request, f"Acknowledged {done} alert(s).", messages.SUCCESS)


class SilenceForm(forms.ModelForm):
    class Meta:
        model = Silence
        fields = ["starts_at", "ends_at", "rule", "component", "reason"]

    def clean_ends_at(self) -> Any:
        ends_at = self.cleaned_data.get("ends_at")
        if ends_at is not None and ends_at <= timezone.now():
            raise ValidationError("must be in the future")
        return ends_at


@admin.register(Silence)
class SilenceAdmin(admin.ModelAdmin):
    form = SilenceForm
    list_display = ["__str__", "reason", "active", "created_by", "owner", "created_at"]
    list_filter = ["rule"]
    search_fields = ["reason", "component"]
    actions = ["end_now"]

    @admin.display(boolean=True, description="active now")
    def active(self, silence: Silence) -> bool:
        return silence.starts_at <= timezone.now() < silence.ends_at

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return obj is None and super().has_change_permission(request, obj)  # made, ended or deleted; not edited

    def has_end_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("alerting.change_silence")

    def save_model(self, request: HttpRequest, obj: Silence, form: Any, change: bool) -> None:
        data = form.cleaned_data
        saved = silence_create(
            starts_at=data.get("starts_at"),
            ends_at=data["ends_at"],
            rule=data.get("rule"),
            component=data.get("component") or "",
            reason=data["reason"],
            actor=Actor.for_user(request.user),
        )
        obj.pk = saved.pk
        obj._state.adding = False

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        pass

    def delete_model(self, request: HttpRequest, obj: Silence) -> None:
        silence_delete(silence=obj, actor=Actor.for_user(request.user))

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet) -> None:
        for silence in queryset:
            self.delete_model(request, silence)

    @admin.action(description="End the selected silences now", permissions=["end"])
    def end_now(self, request: HttpRequest, queryset: QuerySet) -> None:
        actor = Actor.for_user(request.user)
        for silence in queryset:
            silence_end(silence=silence, actor=actor)
        self.message_user(request, f"Ended {queryset.count()} silence(s).", messages.SUCCESS)


@admin.register(Delivery)
class DeliveryAdmin(StatusPillsAdmin, ReadOnlyAdminMixin, admin.ModelAdmin):
    """The delivery log: read-only."""

    list_display = [
        "created_at", "event", "channel", "alert", admin_status("status"), "attempts", "response_status", "last_error",
    ]  # fmt: skip
    list_filter = ["status", "event", "channel"]
    search_fields = ["alert__dedup_key", "channel__name", "last_error"]
    list_select_related = ["channel", "alert__rule"]
    date_hierarchy = "created_at"
    fields = readonly_fields = (
        "created_at", "event", "channel", "alert", "status", "attempts", "last_attempt_at", "sent_at",
        "response_status", "last_error", "payload",
    )  # fmt: skip
