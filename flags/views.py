from __future__ import annotations

import json
from typing import Any

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from controlplane.access import operator_page
from controlplane.audit import Actor
from controlplane.errors import InvalidInput
from controlplane.models import DEFAULT_FLAGS_ENVIRONMENT, Environment
from flags import targeting
from flags.definitions import flags_queryset
from flags.evaluation import TargetingKeyMissing, answer, evaluate, on_for, variant
from flags.selectors import compiled_of, flag_history, segments_compiled
from flags.services import MAX_TARGETING_KEY, FlagNotFound, flag_toggle
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
