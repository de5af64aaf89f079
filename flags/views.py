from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from django import forms
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from controlplane.access import operator_page
from controlplane.audit import Actor
from controlplane.errors import InvalidInput, NotFound
from controlplane.models import DEFAULT_FLAGS_ENVIRONMENT, Environment
from flags.definitions import flags_queryset
from flags.evaluation import TargetingKeyMissing, evaluate, on_for, variant
from flags.models import ScheduledChange, ScheduledChangeKind
from flags.schedules import ScheduledChangeNotFound, cancel_change, pending_and_recent, schedule_change
from flags.selectors import compiled_of, flag_history, segments_compiled
from flags.services import (
    MAX_ROLLOUT_PERCENT,
    MAX_TARGETING_KEY,
    MIN_ROLLOUT_PERCENT,
    FlagNotFound,
    flag_toggle,
)

VIEW_PERMISSION = "flags.view_flag"
CHANGE_PERMISSION = "flags.change_flag"


@operator_page(VIEW_PERMISSION)
def flag_list(request: HttpRequest) -> HttpResponse:
    segments = segments_compiled()
    flags = [(flag, on_for(compiled_of(flag, segments=segments))) for flag in flags_queryset()]
    return render(request, "flags/list.html", {"flags": flags, "can_change": request.user.has_perm(CHANGE_PERMISSION)})


@operator_page(VIEW_PERMISSION)
def flag_detail(request: HttpRequest, name: str) -> HttpResponse:
    flag = get_object_or_404(flags_queryset(), name=name)
    segments = segments_compiled()
    compiled = compiled_of(flag, segments=segments)
    states = [(state, on_for(compiled_of(flag, state.environment.name, segments))) for state in flag.states.all()]
    user_id = request.GET.get("user_id", "").strip()
    evaluation = without_key = error = None
    if len(user_id) > MAX_TARGETING_KEY:
        error = f"A user id has at most {MAX_TARGETING_KEY} characters."
    elif user_id:
        value, reason = evaluate(compiled, user_id)
        evaluation = {"value": value, "variant": variant(value), "reason": reason}
    else:
        try:
            value, reason = evaluate(compiled, None)
            without_key = {"value": value, "reason": reason}
        except TargetingKeyMissing:
            pass  # the page says the answer depends on the user
    context = {
        "flag": flag,
        "on_for": on_for(compiled),
        "states": states,
        "history": flag_history(flag.pk),
        "user_id": user_id,
        "evaluation": evaluation,
        "without_key": without_key,
        "error": error,
        "can_change": request.user.has_perm(CHANGE_PERMISSION),
        "scheduled": pending_and_recent(flag.pk),
        "schedule_form": ScheduleForm(),
    }
    return render(request, "flags/detail.html", context)


@operator_page(VIEW_PERMISSION)
@require_POST
def flag_toggle_view(request: HttpRequest, name: str) -> HttpResponse:
    """Flip a flag, or set it to the posted ``enabled`` (1 or 0).

    Turning a flag off for everyone asks first: a POST without ``confirm=yes`` changes nothing and shows
    a page naming the flag and who it is on for now (it works without JavaScript). The confirmation posts
    the state to set, not a flip, so a flag someone else turned off meanwhile is not turned back on.
    """
    if not request.user.has_perm(CHANGE_PERMISSION):
        raise PermissionDenied("changing flags needs the flags.change_flag permission")
    back = "detail" if request.POST.get("next") == "detail" else "list"
    flag = flags_queryset().filter(name=name).first()
    if flag is None:
        messages.error(request, f"No flag named {name}.")
        return redirect("flags:list")
    posted = request.POST.get("enabled")
    enabled = {"1": True, "0": False}.get(posted or "", not flag.enabled)
    if flag.enabled and not enabled and request.POST.get("confirm") != "yes":
        context = {"flag": flag, "on_for": on_for(compiled_of(flag)), "next": back}
        return render(request, "flags/confirm_off.html", context)
    try:
        flag = flag_toggle(name=name, changes={"enabled": enabled}, actor=Actor.for_user(request.user))
    except FlagNotFound:
        messages.error(request, f"No flag named {name}.")
        return redirect("flags:list")
    messages.success(request, f"{flag.name} is now {'enabled' if flag.enabled else 'disabled'}.")
    return redirect("flags:detail", name=flag.name) if back == "detail" else redirect("flags:list")


class ScheduleForm(forms.Form):
    """The flag page's "Schedule a change": an environment, a UTC time, and on, off or a rollout."""

    environment = forms.ChoiceField()
    at = forms.DateTimeField(
        label="When (UTC)", input_formats=["%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M:%S"]
    )
    action = forms.ChoiceField(
        choices=[
            (ScheduledChangeKind.ENABLE, "Turn on"),
            (ScheduledChangeKind.DISABLE, "Turn off"),
            (ScheduledChangeKind.ROLLOUT, "Set the rollout to"),
        ]
    )
    rollout_percent = forms.IntegerField(
        required=False, min_value=MIN_ROLLOUT_PERCENT, max_value=MAX_ROLLOUT_PERCENT, label="Rollout %"
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        names = list(Environment.objects.values_list("name", flat=True))
        field = self.fields["environment"]
        assert isinstance(field, forms.ChoiceField)
        field.choices = [(n, n) for n in names]
        self.fields["environment"].initial = DEFAULT_FLAGS_ENVIRONMENT

    def clean_at(self) -> datetime:
        # The page says UTC: the value is read as UTC whatever the server's zone.
        value: datetime = self.cleaned_data["at"]
        return value.replace(tzinfo=UTC) if timezone.is_naive(value) else value.astimezone(UTC)

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("action") == ScheduledChangeKind.ROLLOUT and data.get("rollout_percent") is None:
            self.add_error("rollout_percent", "A rollout needs a percentage from 0 to 100.")
        return data


def _require_change(request: HttpRequest) -> None:
    if not request.user.has_perm(CHANGE_PERMISSION):
        raise PermissionDenied("changing flags needs the flags.change_flag permission")


@operator_page(VIEW_PERMISSION)
@require_POST
def flag_schedule_view(request: HttpRequest, name: str) -> HttpResponse:
    """Schedule a change from the flag page; errors come back as messages on that page."""
    _require_change(request)
    form = ScheduleForm(request.POST)
    if not form.is_valid():
        problems = "; ".join(
            f"{getattr(form.fields.get(k), 'label', None) or k}: {' '.join(str(e) for e in v)}"
            for k, v in form.errors.items()
        )
        messages.error(request, f"Not scheduled: {problems}")
        return redirect("flags:detail", name=name)
    data = form.cleaned_data
    payload = {"rollout_percent": data["rollout_percent"]} if data["action"] == ScheduledChangeKind.ROLLOUT else {}
    try:
        change = schedule_change(
            name=name,
            environment=data["environment"],
            at=data["at"],
            kind=data["action"],
            payload=payload,
            actor=Actor.for_user(request.user),
        )
    except FlagNotFound:
        messages.error(request, f"No flag named {name}.")
        return redirect("flags:list")
    except (InvalidInput, NotFound) as exc:
        messages.error(request, f"Not scheduled: {exc}")
        return redirect("flags:detail", name=name)
    messages.success(request, f"Scheduled: {change}.")
    return redirect("flags:detail", name=name)


@operator_page(VIEW_PERMISSION)
@require_POST
def flag_schedule_cancel_view(request: HttpRequest, name: str) -> HttpResponse:
    _require_change(request)
    raw = request.POST.get("change", "")
    valid = raw.isdigit() and len(raw) < 19
    change = ScheduledChange.objects.filter(pk=int(raw), flag__name=name).first() if valid else None
    if change is None:
        messages.error(request, "No such scheduled change.")
        return redirect("flags:detail", name=name)
    try:
        cancel_change(change_id=change.pk, actor=Actor.for_user(request.user))
    except ScheduledChangeNotFound:
        messages.error(request, "That change is no longer pending (applied, skipped or cancelled already).")
    else:
        messages.success(request, f"Cancelled: {change}.")
    return redirect("flags:detail", name=name)
