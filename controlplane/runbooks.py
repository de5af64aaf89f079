"""The recovery plans an alert rule may name, without alerting importing deployments.

Deployments owns the plans (``deployments.RecoveryPlan``, named by their failure type) and the page that
runs one; it registers, from its ``apps.py``, how to list their names and where that page is. Alerting
validates a rule's plan and links an alert to the page through this registry alone. With nothing
registered (deployments not installed) no plan exists, so a rule naming one is refused.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class PlanSource:
    names: Callable[[], list[str]]  # the plans' failure types, in the order they are listed
    url: Callable[[str, int | None], str]  # the page that shows a plan's dry run and runs it (for an alert)


_SOURCE: dict[str, PlanSource] = {}


def register_recovery_plans(names: Callable[[], list[str]], url: Callable[[str, int | None], str]) -> None:
    _SOURCE["plans"] = PlanSource(names, url)


def recovery_plan_names() -> list[str]:
    source = _SOURCE.get("plans")
    return source.names() if source is not None else []


def recovery_plan_problem(name: str) -> str | None:
    """Why ``name`` cannot be a rule's recovery plan, or None when a plan of that failure type exists."""
    known = recovery_plan_names()
    if name in known:
        return None
    return f"no recovery plan {name!r}; plans: {', '.join(known) or 'none (add one under Deployments)'}"


def recovery_plan_url(name: str, alert_id: int | None = None) -> str:
    """The page that runs plan ``name`` (a dry run first, then a confirmation); "" when none is registered."""
    source = _SOURCE.get("plans")
    return source.url(name, alert_id) if source is not None else ""
