"""Recovery plans that are drilled: what backups needs to know of them, without importing deployments.

Deployments owns the recovery plans (their failure type, environment, steps, runbook, and the drill's
settings: the backup target it restores, its schedule, its smoke queries). Backups owns the drills: it
restores, runs the smoke queries, records each drill and shows them (the Backups page, readiness,
``/backup/recovery-readiness``). Backups may not import deployments, so deployments registers a
provider here from its ``apps.py`` (``register_plans``) and backups reads ``drill_plans()``: plain
values, named by the plan's failure type, read at the time they are needed (a plan edited in admin
is drilled as edited, at its next run).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

DEFAULT_INTERVAL_HOURS = 7 * 24  # weekly


@dataclass(frozen=True)
class DrillPlan:
    name: str  # the recovery plan's failure type
    environment: str
    target: str  # the backup target whose latest verified backup the drill restores ("": none)
    interval_hours: int  # the drill schedule; 0: never drilled on a schedule
    smoke_queries: tuple[str, ...] = ()

    @property
    def drilled(self) -> bool:
        """Drilled on a schedule: it names a backup target and has a schedule."""
        return bool(self.target) and self.interval_hours > 0


# app label -> provider; a dict, so a second ready() (tests that reload apps) replaces rather than repeats.
_PROVIDERS: dict[str, Callable[[], list[DrillPlan]]] = {}


def register_plans(app_label: str, provider: Callable[[], list[DrillPlan]]) -> None:
    _PROVIDERS[app_label] = provider


def drill_plans() -> list[DrillPlan]:
    """Every registered recovery plan, drilled or not, sorted by name."""
    plans: list[DrillPlan] = []
    for provider in _PROVIDERS.values():
        plans.extend(provider())
    return sorted(plans, key=lambda plan: plan.name)


def drill_plan(name: str) -> DrillPlan | None:
    return next((plan for plan in drill_plans() if plan.name == name), None)
