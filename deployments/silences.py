"""Silences that follow a deployment: the alert rules its pipeline names (``Pipeline.silence_rules``) are
silenced from the moment a worker starts it until it ends, whatever the outcome (succeeded, rolled back,
cancelled, or finished by the reaper after its worker died).

The silences are alerting's ``Silence`` rows, made and ended through ``alerting.services`` (so audited),
owned by ``deployment:<id>``. Each also ends by itself at a bound (every step's and rollback action's
timeout added up, plus an hour), so a deployment that somehow never ends cannot keep alerts quiet for ever.
A silence that cannot be made or ended is logged on the deployment; it never fails the deployment.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from django.utils import timezone

from controlplane.audit import Actor
from deployments.models import Deployment, DeploymentType, LogLevel
from deployments.services import log
from deployments.steps import DEFAULT_TIMEOUT

logger = logging.getLogger(__name__)
ACTOR = Actor.system("deployment runner")
MARGIN = timedelta(hours=1)


def owner(deployment: Deployment) -> str:
    return f"deployment:{deployment.pk}"


def rule_names(deployment: Deployment) -> list[str]:
    """The rules this deployment silences: its pipeline's, for a real deploy or rollback (a recovery plan
    runs its own steps, not the pipeline, and so does a guarded rollout; a dry run changes nothing that
    could alert)."""
    if deployment.dry_run or deployment.type in (DeploymentType.RECOVERY, DeploymentType.GUARDED):
        # A guarded rollout is watched by its guards; silencing the pipeline's rules for its hours of
        # holds would hide the very alerts it may cause.
        return []
    return list(deployment.environment.pipeline.silence_rules or [])


def _step_seconds(step: dict[str, Any]) -> float:
    return float(step.get("timeout", DEFAULT_TIMEOUT.get(step.get("kind", ""), 3600)))


def bound(steps: list[dict[str, Any]]) -> timedelta:
    """How long the deployment can possibly run: each step and each rollback action to its timeout."""
    seconds = sum(
        _step_seconds(step) + (_step_seconds(step["rollback"]) if step.get("rollback") else 0) for step in steps
    )
    return timedelta(seconds=seconds) + MARGIN


def hold(deployment: Deployment) -> None:
    """When a worker has started ``deployment``: silence its pipeline's rules, and say so in its log."""
    from alerting.services import silences_hold

    names = rule_names(deployment)
    if not names:
        return
    ends_at = timezone.now() + bound(deployment.steps)
    reason = f"deployment #{deployment.pk} of {deployment.version} to {deployment.environment.name} is running"
    try:
        made = silences_hold(rule_names=names, owner=owner(deployment), reason=reason, ends_at=ends_at, actor=ACTOR)
    except Exception as exc:  # noqa: BLE001 - a silence never stops a deployment; the log says it failed
        logger.exception("deployment %s: could not silence %s", deployment.pk, names)
        log(deployment, f"could not silence the alert rules {', '.join(names)}: {exc}", level=LogLevel.WARNING)
        return
    silenced = [silence.rule.name for silence in made if silence.rule is not None]
    if silenced:
        log(
            deployment,
            f"silenced the alert rules {', '.join(silenced)} until this deployment ends "
            f"(at the latest {ends_at:%Y-%m-%d %H:%M} UTC)",
        )
    missing = [name for name in names if name not in silenced]
    if missing:
        log(deployment, f"no alert rule named {', '.join(missing)}: not silenced", level=LogLevel.WARNING)


def release(deployment: Deployment) -> None:
    """When ``deployment`` has ended: end the silences it holds now (after its final status is committed)."""
    from alerting.services import silences_release

    try:
        ended = silences_release(owner=owner(deployment), actor=ACTOR)
    except Exception as exc:  # noqa: BLE001 - as in hold; the silences still end at their bound
        logger.exception("deployment %s: could not end its silences", deployment.pk)
        log(deployment, f"could not end this deployment's silences: {exc}", level=LogLevel.WARNING)
        return
    if ended:
        names = ", ".join(silence.rule.name for silence in ended if silence.rule is not None)
        log(deployment, f"silences ended: {names}")
