"""Guarded flag rollouts: a flag's rollout raised step by step in one environment, watched by guards.

A plan is a deployment (type ``guarded``, ``Deployment.flag`` set) whose steps are, for each percentage, a
``flags`` step raising the rollout and an ``analysis`` step holding there while the guards are measured
(``failure_limit`` 1: a single breach fails it). The first ``flags`` step's rollback restores the flag's
whole state in that environment as it was before the plan (a state document, ``flags.definitions``), so
a breach, an abort (a cancel) or a lost worker all put the flag back through the runner's ordinary
rollback. That state is the one the first step replaced (it is ``capture``d when the step runs and stored
on the row), not the one at the request: a hand change made while the plan waited for a worker stays.
It runs on the same runner, reaper and claim as any deployment; its lock is the flag's in the environment
(a database constraint), so it neither takes nor waits for the environment's deploy lock.

The guards default to every monitored service's error ratio under 1 % and p95 under 2 s; when the flag's
``owner`` names monitored services (comma-separated), to those services only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.utils import timezone

from controlplane.audit import Actor, audit_record
from controlplane.errors import Conflict, InvalidInput
from deployments import analysis
from deployments.models import Deployment, DeploymentStatus, DeploymentType, Environment, LogLevel
from deployments.services import (
    DeploymentLocked,
    InvalidDeployment,
    clean_version,
    deployment_cancel,
    deployment_request,
    log,
)
from deployments.steps import InvalidStep, validate_steps

DEFAULT_PERCENTS = [1, 5, 25, 50, 100]
# A hold's length, by the kind of environment: ten minutes where real users are, seconds elsewhere (the demo).
PRODUCTION_HOLD = 600
OTHER_HOLD = 10
ERROR_RATIO_MAX = 0.01
P95_MAX = 2.0
ACTION_PREFIX = "guarded_rollout."
ON_INCONCLUSIVE = ("pass", "wait", "fail")


class NotGuardedRollout(InvalidInput):
    """The deployment asked to pause, resume or skip is not an active guarded rollout."""


class GuardedRolloutState(Conflict):
    """The plan is not in a state that allows this (already paused, finished...): 409."""

    code = "guarded_rollout_state"


@dataclass(frozen=True)
class Plan:
    percents: list[int]
    hold: float  # seconds at each step
    interval: float
    window: float
    min_requests: int
    on_inconclusive: str


def default_plan(production: bool) -> dict[str, Any]:
    """The plan's fields with their defaults for a production environment or another one."""
    hold = PRODUCTION_HOLD if production else OTHER_HOLD
    return {
        "percents": list(DEFAULT_PERCENTS),
        "hold": hold,
        "interval": 15 if production else 1,
        "window": 300 if production else 30,
        "min_requests": 50 if production else 10,
        "on_inconclusive": "pass",
    }


def _number(value: Any, field: str, low: float, high: float) -> float:
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise InvalidDeployment(field, f"a number from {low:g} to {high:g}") from None
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise InvalidDeployment(field, f"a number from {low:g} to {high:g}")
    return float(value)


def clean_percents(value: Any) -> list[int]:
    """ "1, 5, 25, 50, 100" or a list: rising whole percentages from 1 to 100."""
    if isinstance(value, str):
        parts = [p.strip().rstrip("%").strip() for p in value.split(",") if p.strip()]
        if not all(p.isdigit() for p in parts):
            raise InvalidDeployment("percents", "whole percentages separated by commas, e.g. 1, 5, 25, 50, 100")
        value = [int(p) for p in parts]
    if not isinstance(value, list) or not value or len(value) > 20:
        raise InvalidDeployment("percents", "1 to 20 rising percentages, e.g. 1, 5, 25, 50, 100")
    for index, percent in enumerate(value):
        if isinstance(percent, bool) or not isinstance(percent, int) or not 1 <= percent <= 100:
            raise InvalidDeployment(f"percents[{index}]", "a whole number from 1 to 100")
        if index and percent <= value[index - 1]:
            raise InvalidDeployment(f"percents[{index}]", "each step higher than the one before")
    return list(value)


def clean_plan(data: dict[str, Any], *, production: bool) -> Plan:
    """The plan from ``data`` (fields left out or empty take ``default_plan``'s values)."""
    values = default_plan(production)
    values.update({k: v for k, v in data.items() if k in values and v not in (None, "")})
    unknown = sorted(set(data) - set(values))
    if unknown:
        raise InvalidDeployment(unknown[0], f"not a field of a plan; one of {', '.join(sorted(values))}")
    hold = _number(values["hold"], "hold", 1, 86400)
    interval = _number(values["interval"], "interval", 0.1, 3600)
    if interval > hold:
        raise InvalidDeployment("interval", "at most the hold: each hold is measured at least once")
    least = values["min_requests"]
    if isinstance(least, str) and least.isdigit():
        least = int(least)
    if isinstance(least, bool) or not isinstance(least, int) or least < 0:
        raise InvalidDeployment("min_requests", "a whole number, 0 or more")
    if values["on_inconclusive"] not in ON_INCONCLUSIVE:
        raise InvalidDeployment("on_inconclusive", f"one of {', '.join(ON_INCONCLUSIVE)}")
    return Plan(
        percents=clean_percents(values["percents"]),
        hold=hold,
        interval=interval,
        window=_number(values["window"], "window", 1, analysis.MAX_WINDOW),
        min_requests=least,
        on_inconclusive=values["on_inconclusive"],
    )


def guarded_services(owner: str) -> tuple[list[str], str]:
    """The services the default guards watch, and why: those the owner names, else every monitored one."""
    from monitoring.selectors import service_names

    every = service_names()
    named = [name.strip() for name in owner.split(",") if name.strip()]
    chosen = [name for name in named if name in every]
    if chosen:
        return chosen, "the services the flag's owner names"
    return every, "every monitored service"


def default_guards(owner: str) -> list[dict[str, Any]]:
    services, _why = guarded_services(owner)
    guards: list[dict[str, Any]] = []
    for service in services:
        guards.append({"service": service, "signal": "error_ratio", "max": ERROR_RATIO_MAX})
        guards.append({"service": service, "signal": "p95", "max": P95_MAX})
    return guards[: analysis.MAX_CONDITIONS]


def build_steps(flag: str, before: dict[str, Any], plan: Plan, guards: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """For each percentage, a flags step raising the rollout and an analysis step holding there; the first
    flags step's rollback restores the flag's whole state when anything fails or is aborted: ``before`` (its
    state at the request) until that step runs and captures the state it replaces."""
    steps: list[dict[str, Any]] = []
    for percent in plan.percents:
        raise_step: dict[str, Any] = {
            "name": f"raise to {percent} percent",
            "kind": "flags",
            "set": {flag: {"enabled": True, "rollout_percent": percent}},
        }
        if not steps:
            raise_step["capture"] = True
            raise_step["rollback"] = {"name": "restore the flag", "kind": "flags", "states": {flag: before}}
        steps.append(raise_step)
        steps.append(
            {
                "name": f"hold at {percent} percent",
                "kind": "analysis",
                "duration": plan.hold,
                "interval": plan.interval,
                "window": plan.window,
                "failure_limit": 1,
                "min_requests": plan.min_requests,
                "on_inconclusive": plan.on_inconclusive,
                "conditions": guards,
                # a paused hold goes on measuring; it ends by a resume, an abort or a breach (at most a day)
                "timeout": 86400,
            }
        )
    return steps


def _target(environment: str) -> Environment:
    target = Environment.objects.select_related("environment").filter(name=environment).first()
    if target is None:
        known = ", ".join(Environment.objects.values_list("name", flat=True)) or "none"
        raise InvalidDeployment(
            "environment", f"{environment!r} has no pipeline runner set up (environments that do: {known})"
        )
    return target


def guarded_rollout_start(
    *,
    flag: str,
    environment: str,
    actor: Actor,
    plan: dict[str, Any] | None = None,
    guards: list[dict[str, Any]] | None = None,
) -> Deployment:
    """Start a guarded rollout of ``flag`` in ``environment``: checked, audited, queued for a worker.

    Raises InvalidDeployment (no such flag or environment, a state that is more than a rollout and named
    users, a bad plan or guard, no service to guard) or DeploymentLocked (a plan for this flag and
    environment is active).
    """
    from flags.definitions import simple_of, state_doc
    from flags.models import Flag, FlagState

    target = _target(environment)
    found = Flag.objects.filter(name=flag).first()
    if found is None:
        raise InvalidDeployment("flag", f"no flag named {flag!r}")
    cleaned = clean_plan(plan or {}, production=target.environment.production)
    state = FlagState.objects.filter(flag=found, environment=target.environment).first()
    before = state_doc(state) if state is not None else {"enabled": False, "strategies": [], "variants": []}
    if before["strategies"] and simple_of(before, flag) is None:
        raise InvalidDeployment(
            "flag", f"{flag} in {environment} has strategies beyond a rollout and named users: edit them instead"
        )
    if guards is None:
        guards = default_guards(found.owner)
        if not guards:
            raise InvalidDeployment("guards", "no monitored service to guard with: add one (Monitoring > Services)")
    steps = build_steps(flag, before, cleaned, guards)
    try:
        validate_steps(steps)
    except InvalidStep as exc:
        raise InvalidDeployment(exc.field.replace("steps[1].", "guards: ", 1), exc.message) from None
    try:
        version = clean_version(f"flag-{flag}")
    except InvalidDeployment:
        version = "guarded-rollout"
    return deployment_request(
        environment=environment,
        version=version,
        actor=actor,
        type=DeploymentType.GUARDED,
        steps=steps,
        flag=flag,
        audit_after={"percents": cleaned.percents, "hold": cleaned.hold},
    )


def _active(deployment: Deployment) -> Deployment:
    deployment = Deployment.objects.select_for_update().select_related("environment").get(pk=deployment.pk)
    if not deployment.flag:
        raise NotGuardedRollout("deployment", f"deployment #{deployment.pk} is not a guarded rollout")
    if deployment.status not in (DeploymentStatus.QUEUED, DeploymentStatus.RUNNING):
        raise GuardedRolloutState(f"guarded rollout #{deployment.pk} is {deployment.get_status_display()}")
    return deployment


def _control(deployment: Deployment, actor: Actor, verb: str, **fields: Any) -> Deployment:
    with transaction.atomic():
        deployment = _active(deployment)
        if "paused" in fields and deployment.paused == fields["paused"]:
            state = "paused" if deployment.paused else "not paused"
            raise GuardedRolloutState(f"guarded rollout #{deployment.pk} is {state} already")
        for name, value in fields.items():
            setattr(deployment, name, value)
        deployment.save(update_fields=list(fields))
        log(deployment, f"{verb} by {actor.label}", level=LogLevel.WARNING)
        audit_record(
            actor=actor,
            action=f"{ACTION_PREFIX}{verb.split()[0]}",
            obj=deployment,
            after={"flag": deployment.flag, "environment": deployment.environment.name, "dry_run": False},
        )
    return deployment


def guarded_rollout_pause(*, deployment: Deployment, actor: Actor) -> Deployment:
    """Hold where it is: the current hold goes on measuring (a breach still restores) but does not end."""
    return _control(deployment, actor, "paused", paused=True)


def guarded_rollout_resume(*, deployment: Deployment, actor: Actor) -> Deployment:
    return _control(deployment, actor, "resumed", paused=False)


def guarded_rollout_skip(*, deployment: Deployment, actor: Actor) -> Deployment:
    """End the current hold now: the next step raises the rollout (after a resume, when paused)."""
    return _control(deployment, actor, "skipped ahead", skip_requested_at=timezone.now())


def guarded_rollout_abort(*, deployment: Deployment, actor: Actor) -> Deployment:
    """Stop the plan and restore the flag, as a breach does (a cancel: the runner rolls back)."""
    with transaction.atomic():
        _active(deployment)
        audit_record(
            actor=actor,
            action=f"{ACTION_PREFIX}abort",
            obj=deployment,
            after={"flag": deployment.flag, "environment": deployment.environment.name, "dry_run": False},
        )
    return deployment_cancel(deployment=deployment, actor=actor)


__all__ = [
    "DeploymentLocked",
    "GuardedRolloutState",
    "NotGuardedRollout",
    "default_guards",
    "default_plan",
    "guarded_rollout_abort",
    "guarded_rollout_pause",
    "guarded_rollout_resume",
    "guarded_rollout_skip",
    "guarded_rollout_start",
]


def guarded_services_words(flag: str) -> str:
    """What the default guards of ``flag`` watch, in words (the flag page says it)."""
    from flags.models import Flag

    owner = Flag.objects.filter(name=flag).values_list("owner", flat=True).first() or ""
    services, why = guarded_services(owner)
    return f"{why}: {', '.join(services)}" if services else "no monitored service yet"


# --- Changes on the charts (controlplane.changes, registered in apps.py) ----------------------------------

# The flags steps of a guarded rollout audit their changes under this prefix (the runner's Context), so the
# charts tell a rollout's raise and restore from an operator's flag edit.
FLAG_STEP_PREFIX = "flag.guarded_rollout."


def change_words(action: str, label: str, before: Any, after: Any) -> str:
    """ "guarded rollout of checkout_v2 in production: paused" (an operator's start, pause, resume, skip, abort)."""
    verb = action.removeprefix(ACTION_PREFIX)
    verb = {"start": "started", "skipped": "skipped ahead", "abort": "aborted"}.get(verb, verb)
    if not isinstance(after, dict):
        return f"guarded rollout {label}: {verb}"
    return f"guarded rollout of {after.get('flag', '?')} in {after.get('environment', '?')}: {verb}"


def step_change_words(action: str, label: str, before: Any, after: Any) -> str:
    """ "guarded rollout step: checkout_v2 in production raised to 25 %" (or restored)."""
    after = after if isinstance(after, dict) else {}
    where = after.get("environment", "production")
    if action.endswith("state.update"):
        return f"guarded rollout: {label} in {where} restored to its state before the plan"
    percent = after.get("rollout_percent")
    return (
        f"guarded rollout step: {label} in {where} raised to {percent} %"
        if percent is not None
        else (f"guarded rollout step: {label} in {where}")
    )
