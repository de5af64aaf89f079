from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from controlplane.access import operator_page
from controlplane.audit import Actor
from flags.definitions import flags_queryset
from flags.evaluation import TargetingKeyMissing, evaluate, on_for, variant
from flags.selectors import compiled_of, flag_history, segments_compiled
from flags.services import MAX_TARGETING_KEY, FlagNotFound, flag_toggle

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
