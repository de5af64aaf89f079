from __future__ import annotations

import json
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
from flags import targeting
from flags.definitions import flags_queryset
from flags.evaluation import TargetingKeyMissing, answer, evaluate, on_for, variant
from flags.models import ScheduledChange, ScheduledChangeKind
from flags.schedules import ScheduledChangeNotFound, cancel_change, pending_and_recent, schedule_change
from flags.selectors import compiled_of, flag_history, segments_compiled, stale_flags, usage_of
from flags.services import (
    MAX_ROLLOUT_PERCENT,
    MAX_TARGETING_KEY,
    MIN_ROLLOUT_PERCENT,
    FlagNotFound,
    flag_toggle,
)
from flags.snapshot import current

VIEW_PERMISSION = "flags.view_flag"
CHANGE_PERMISSION = "flags.change_flag"


MAX_WHY_CONTEXT = 10_000  # characters of the pasted context of "Why is this user on?"


@operator_page(VIEW_PERMISSION)
def flag_list(request: HttpRequest) -> HttpResponse:
    """The flag × environment matrix: a row per flag, a cell per environment with its state and a button."""
    segments = segments_compiled()
    environments = list(Environment.objects.all())
    rows = []
    for flag in flags_queryset():
        cells = []
        for env in environments:
            state = flag.state(env.name)
            cells.append(
                {
                    "environment": env,
                    "enabled": bool(state is not None and state.enabled),
                    "on_for": on_for(compiled_of(flag, env.name, segments)),
                }
            )
        rows.append((flag, cells))
    context = {"rows": rows, "environments": environments, "can_change": request.user.has_perm(CHANGE_PERMISSION)}
    return render(request, "flags/list.html", context)


def why(flag: Any, raw: str, environments: list[Environment], segments: Any) -> list[dict[str, Any]]:
    """The flag's answer for a pasted JSON context in each environment, with what decided it.
    Raises InvalidInput (field ``context``) for text that is not a JSON object of a usable context."""
    if len(raw) > MAX_WHY_CONTEXT:
        raise InvalidInput("context", f"A context has at most {MAX_WHY_CONTEXT} characters.")
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise InvalidInput("context", f"The context is not valid JSON: {exc}.") from None
    if not isinstance(data, dict):
        raise InvalidInput(
            "context", 'The context must be a JSON object, like {"targetingKey": "user-1", "plan": "premium"}.'
        )
    key = data.get("targetingKey", data.get("userId"))
    if key is not None and (not isinstance(key, str) or len(key) > MAX_TARGETING_KEY):
        raise InvalidInput("context", f"targetingKey must be text of at most {MAX_TARGETING_KEY} characters.")
    try:
        ctx = targeting.Context.of(data)
    except InvalidInput as exc:
        raise InvalidInput("context", f"The context cannot be used: {exc}") from None
    snap = current()
    results = []
    for env in environments:
        result = answer(compiled_of(flag, env.name, segments), ctx, snap.lookup(env.name), explain=True)
        explanation = result.explanation.as_dict() if result.explanation is not None else {}
        results.append(
            {
                "environment": env,
                "enabled": result.enabled,
                "value": json.dumps(result.value),
                "variant": result.variant_name,
                "reason": result.reason,
                "by_chance": result.by_chance,
                **explanation,
            }
        )
    return results


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
    why_context = request.GET.get("context", "")
    why_results: list[dict[str, Any]] = []
    why_error = None
    if why_context.strip():
        try:
            why_results = why(flag, why_context, list(Environment.objects.all()), segments)
        except InvalidInput as exc:
            why_error = str(exc)
    context = {
        "flag": flag,
        "on_for": on_for(compiled),
        "states": states,
        "history": flag_history(flag.pk),
        "user_id": user_id,
        "evaluation": evaluation,
        "without_key": without_key,
        "error": error,
        "why_context": why_context,
        "why_results": why_results,
        "why_error": why_error,
        "can_change": request.user.has_perm(CHANGE_PERMISSION),
        "usage": usage_chart(usage_of(flag.name)),
        "scheduled": pending_and_recent(flag.pk),
        "schedule_form": ScheduleForm(),
    }
    return render(request, "flags/detail.html", context)


@operator_page(VIEW_PERMISSION)
@require_POST
def flag_toggle_view(request: HttpRequest, name: str) -> HttpResponse:
    """Turn a flag on or off in one environment (the posted ``environment``, production when none):
    set it to the posted ``enabled`` (1 or 0), or flip it.

    In a production environment (``Environment.production``) any change asks first: a POST without
    ``confirm=yes`` changes nothing and shows a page naming the flag, the environment and who it is on
    for now (it works without JavaScript). The confirmation posts the state to set, not a flip, so a
    flag someone else changed meanwhile is not changed back.
    """
    if not request.user.has_perm(CHANGE_PERMISSION):
        raise PermissionDenied("changing flags needs the flags.change_flag permission")
    back = "detail" if request.POST.get("next") == "detail" else "list"
    flag = flags_queryset().filter(name=name).first()
    if flag is None:
        messages.error(request, f"No flag named {name}.")
        return redirect("flags:list")
    env_name = request.POST.get("environment") or DEFAULT_FLAGS_ENVIRONMENT
    env = Environment.objects.filter(name=env_name).first()
    if env is None:
        if env_name != DEFAULT_FLAGS_ENVIRONMENT:
            messages.error(request, f"No environment named {env_name}.")
            return redirect("flags:list")
        env = Environment.objects.ensure(DEFAULT_FLAGS_ENVIRONMENT, production=True)
    state = flag.state(env.name)
    current_on = bool(state is not None and state.enabled)
    posted = request.POST.get("enabled")
    enabled = {"1": True, "0": False}.get(posted or "", not current_on)
    if env.production and request.POST.get("confirm") != "yes":
        context = {
            "flag": flag,
            "environment": env,
            "enabled": enabled,
            "on_for": on_for(compiled_of(flag, env.name)),
            "next": back,
        }
        return render(request, "flags/confirm_toggle.html", context)
    try:
        flag_toggle(name=name, changes={"enabled": enabled}, actor=Actor.for_user(request.user), environment=env.name)
    except FlagNotFound:
        messages.error(request, f"No flag named {name}.")
        return redirect("flags:list")
    messages.success(request, f"{name} is now {'enabled' if enabled else 'disabled'} in {env.name}.")
    return redirect("flags:detail", name=name) if back == "detail" else redirect("flags:list")


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


# --- Usage, stale flags, SDK instances --------------------------------------------------------------

CHART_WIDTH, CHART_HEIGHT = 300, 60


def usage_chart(usage: dict[str, Any]) -> dict[str, Any]:
    """The usage with its 30 daily bars laid out for an inline SVG (x, y, height, title)."""
    count = len(usage["per_day"])
    width = CHART_WIDTH / count
    top = usage["max"] or 1
    bars = []
    for index, (day, value) in enumerate(zip(usage["days"], usage["per_day"], strict=True)):
        height = round(value / top * (CHART_HEIGHT - 2), 1) if value else 0
        bars.append(
            {
                "x": round(index * width, 1),
                "y": round(CHART_HEIGHT - height, 1),
                "width": round(width - 1, 1),
                "height": height,
                "title": f"{day:%Y-%m-%d}: {value:,} evaluations",
            }
        )
    return {**usage, "bars": bars, "width": CHART_WIDTH, "height": CHART_HEIGHT}


@operator_page(VIEW_PERMISSION)
def stale_list(request: HttpRequest) -> HttpResponse:
    """Flags ready to remove from the code, by owner (``?owner=`` shows one owner's)."""
    owner = request.GET.get("owner", "").strip()
    stale = stale_flags()
    owners = sorted({item["flag"].owner for item in stale})
    if owner:
        stale = [item for item in stale if item["flag"].owner == owner]
    from django.conf import settings

    context = {
        "stale": stale,
        "owners": owners,
        "owner": owner,
        "settings_unused": settings.FLAG_STALE_UNUSED_DAYS,
        "settings_on": settings.FLAG_STALE_FULLY_ON_DAYS,
    }
    return render(request, "flags/stale.html", context)


@operator_page(VIEW_PERMISSION)
def sdk_instances(request: HttpRequest) -> HttpResponse:
    """The Unleash SDKs that registered or sent metrics, most recently heard from first."""
    from flags.models import SdkInstance

    instances = SdkInstance.objects.select_related("environment")[:500]
    return render(request, "flags/sdk_instances.html", {"instances": instances})
