"""Scheduled changes to a flag's state: the writes (schedule, cancel, apply what is due).

The services of ``flags.services`` make the change itself, so a scheduled change is validated, audited
and published exactly as the same change made by hand; the audit names the schedule and, on whose
behalf, the person who scheduled it.

When the flag moved between scheduling and the time (someone edited it by hand), the rule is:

- on, off and a rollout percentage state an absolute target, so they are applied whatever moved,
  and the change's note says "the flag moved since it was scheduled". (A rollout cannot be set on a
  state whose strategies are no longer today's simple ones; such a change is skipped, saying why.)
- a full state (a strategy edit) was written against the state as it was: applied on top of another
  one it would silently undo that edit, so it is applied only if the state is still what it was when
  scheduled, otherwise skipped with the reason.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import transaction
from django.utils import timezone

from controlplane.audit import Actor, audit_record
from controlplane.errors import InvalidInput, NotFound
from controlplane.models import ActorType
from flags import definitions as docs
from flags.models import FlagState, ScheduledChange, ScheduledChangeKind, ScheduledChangeStatus
from flags.services import (
    FlagNotFound,
    InvalidFlagDefinition,
    _environment,
    clean_rollout_percent,
    flag_state_set,
    flag_update,
)

logger = logging.getLogger(__name__)

MOVED = "the flag moved since it was scheduled"


class InvalidSchedule(InvalidInput):
    """A change that cannot be scheduled: a time not in the future, an unknown action or a bad payload."""


class ScheduledChangeNotFound(NotFound):
    def __init__(self, change_id: int) -> None:
        super().__init__(f"no pending scheduled change #{change_id}")


def schedule_actor(change: ScheduledChange) -> Actor:
    """The schedule, on behalf of whoever scheduled the change: both names in the audit's actor."""
    return Actor(ActorType.SYSTEM, f"schedule on behalf of {change.created_by}")


def _state_now(flag_id: int, environment_id: int) -> dict[str, Any] | None:
    row = (
        FlagState.objects.filter(flag_id=flag_id, environment_id=environment_id)
        .prefetch_related("strategies__constraints", "strategies__variants", "strategies__segments", "variants")
        .first()
    )
    return docs.state_doc(row) if row is not None else None


def _clean_payload(kind: str, payload: Any, flag_name: str, base: dict[str, Any] | None) -> dict[str, Any]:
    if kind not in ScheduledChangeKind.values:
        raise InvalidSchedule("kind", f"must be one of {', '.join(ScheduledChangeKind.values)}")
    payload = payload or {}
    if not isinstance(payload, dict):
        raise InvalidSchedule("payload", "must be an object")
    if kind in (ScheduledChangeKind.ENABLE, ScheduledChangeKind.DISABLE):
        if payload:
            raise InvalidSchedule("payload", f"{kind} takes no payload")
        return {}
    if kind == ScheduledChangeKind.ROLLOUT:
        if set(payload) != {"rollout_percent"}:
            raise InvalidSchedule("payload", 'a rollout takes {"rollout_percent": 0 to 100}')
        percent = clean_rollout_percent(payload["rollout_percent"], flag=flag_name)
        if base is not None and base["strategies"] and docs.simple_of(base, flag_name) is None:
            raise InvalidSchedule(
                "rollout_percent", "this state has strategies beyond a rollout and named users; schedule a state"
            )
        return {"rollout_percent": percent}
    if set(payload) != {"state"}:
        raise InvalidSchedule("payload", 'a state change takes {"state": a state document}')
    try:
        return {"state": docs.clean_state(payload["state"], "state")}
    except docs.DocumentError as exc:
        raise InvalidFlagDefinition(exc.field, exc.message, flag=flag_name) from None


def schedule_change(
    *,
    name: str,
    environment: str | None,
    at: datetime,
    kind: str,
    payload: Any = None,
    actor: Actor,
    now: datetime | None = None,
) -> ScheduledChange:
    """Schedule ``kind`` (enable, disable, rollout, state) of flag ``name`` in ``environment``
    (production when None) for ``at``, which must be in the future. Audited as the scheduler's."""
    from flags.models import Flag

    now = now or timezone.now()
    if timezone.is_naive(at):
        raise InvalidSchedule("at", "give a time with its zone (UTC)")
    if at <= now:
        raise InvalidSchedule("at", f"must be in the future (now is {now:%Y-%m-%d %H:%M:%S} UTC)")
    with transaction.atomic():
        flag = Flag.objects.filter(name=name).first()
        if flag is None:
            raise FlagNotFound(name)
        env = _environment(environment)
        base = _state_now(flag.pk, env.pk) or {"enabled": False, "strategies": [], "variants": []}
        clean = _clean_payload(kind, payload, name, base)
        change = ScheduledChange.objects.create(
            flag=flag, environment=env, at=at, kind=kind, payload=clean, base=base, created_by=actor.label
        )
        audit_record(
            actor=actor,
            action="flag.schedule",
            obj=flag,
            after={"environment": env.name, "at": at, "change": change.describe(), **clean},
        )
    return change


def cancel_change(*, change_id: int, actor: Actor) -> ScheduledChange:
    """Cancel a pending change; one already applied, skipped or cancelled is not found as pending."""
    with transaction.atomic():
        claimed = ScheduledChange.objects.filter(pk=change_id, status=ScheduledChangeStatus.PENDING).update(
            status=ScheduledChangeStatus.CANCELLED, note=f"cancelled by {actor.label}"
        )
        if not claimed:
            raise ScheduledChangeNotFound(change_id)
        change = ScheduledChange.objects.select_related("flag", "environment").get(pk=change_id)
        audit_record(
            actor=actor,
            action="flag.schedule.cancel",
            obj=change.flag,
            before={"environment": change.environment.name, "at": change.at, "change": change.describe()},
        )
    return change


@dataclass(frozen=True, slots=True)
class Outcome:
    change_id: int
    status: str
    note: str


def apply_due(*, now: datetime | None = None) -> list[Outcome]:
    """Apply every pending change whose time has come, oldest first. Each is claimed with a conditional
    UPDATE (pending -> applied) in the transaction that applies it: a second worker finds it claimed
    (or waits for the first to commit and then does), so no change is applied twice."""
    now = now or timezone.now()
    due = list(
        ScheduledChange.objects.filter(status=ScheduledChangeStatus.PENDING, at__lte=now)
        .order_by("at", "pk")
        .values_list("pk", flat=True)
    )
    outcomes = []
    for change_id in due:
        outcome = _apply_one(change_id, now)
        if outcome is not None:
            outcomes.append(outcome)
    return outcomes


def _apply_one(change_id: int, now: datetime) -> Outcome | None:
    with transaction.atomic():
        claimed = ScheduledChange.objects.filter(pk=change_id, status=ScheduledChangeStatus.PENDING).update(
            status=ScheduledChangeStatus.APPLIED, applied_at=now
        )
        if not claimed:
            return None  # another worker took it, or it was cancelled meanwhile
        change = ScheduledChange.objects.select_related("flag", "environment").get(pk=change_id)
        current = _state_now(change.flag_id, change.environment_id)
        moved = current != change.base
        status, note = ScheduledChangeStatus.APPLIED, MOVED if moved else ""
        if change.kind == ScheduledChangeKind.STATE and moved:
            status, note = ScheduledChangeStatus.SKIPPED, f"skipped: {MOVED}, and a state replaces it whole"
        else:
            try:
                with transaction.atomic():
                    _run(change)
            except (InvalidInput, NotFound) as exc:
                status, note = ScheduledChangeStatus.SKIPPED, f"skipped: {exc}" + (f" ({MOVED})" if moved else "")
        if status == ScheduledChangeStatus.SKIPPED:
            audit_record(
                actor=schedule_actor(change),
                action="flag.schedule.skip",
                obj=change.flag,
                after={"environment": change.environment.name, "change": change.describe(), "note": note},
            )
        ScheduledChange.objects.filter(pk=change_id).update(status=status, note=note)
    logger.info("scheduled change %s of %s: %s %s", change_id, change.flag.name, status, note)
    return Outcome(change_id, status, note)


def _run(change: ScheduledChange) -> None:
    actor, env, name = schedule_actor(change), change.environment.name, change.flag.name
    if change.kind == ScheduledChangeKind.STATE:
        flag_state_set(name=name, environment=env, state=change.payload["state"], actor=actor)
        return
    changes: dict[str, Any] = (
        {"rollout_percent": change.payload["rollout_percent"]}
        if change.kind == ScheduledChangeKind.ROLLOUT
        else {"enabled": change.kind == ScheduledChangeKind.ENABLE}
    )
    action = "flag.update" if change.kind == ScheduledChangeKind.ROLLOUT else "flag.toggle"
    flag_update(name=name, changes=changes, actor=actor, action=action, environment=env)


def pending_and_recent(flag_id: int, *, recent: int = 10) -> tuple[list[ScheduledChange], list[ScheduledChange]]:
    """The flag page's lists: every pending change (soonest first) and the latest finished ones."""
    rows = ScheduledChange.objects.filter(flag_id=flag_id).select_related("environment")
    pending = list(rows.filter(status=ScheduledChangeStatus.PENDING).order_by("at", "pk"))
    done = list(rows.exclude(status=ScheduledChangeStatus.PENDING).order_by("-at", "-pk")[:recent])
    return pending, done
