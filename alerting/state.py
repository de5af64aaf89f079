"""The alert state machine: what one evaluation does to one alert, as one pure function.

``next_state(alert, rule, value, now, context)`` takes plain values (the open alert of a target, or None;
the rule; the value observed now, None for no data; what else decides a notification) and returns the
``Transition`` to apply. No database, no clock, no module state: ``alerting.services`` loads the rows,
calls it and applies what it returns (the alert row, the deliveries, the summary).

The rules it encodes:

- No data says nothing either way: an open alert stays as it is (only its evaluation time moves).
- While the condition holds, an alert is pending until it has held ``for_evaluations`` times in a row,
  then fires; when it no longer holds, the open alert resolves (a pending one quietly).
- A firing alert is announced, and reminded of while nobody acknowledges it, at most once per
  ``repeat_interval`` per target (the dedup key, whichever alert of that key notified last): an alert
  that resolves and fires again within the interval is not announced again until it has passed.
- A resolution is announced only after an announced firing, whatever the interval.
- Suppressed (``external_alerts`` off, or a matching silence), a state change is recorded as a skipped
  notification and starts no cooldown; a suppressed reminder is not recorded at all.
- With no channel to tell, nothing is recorded and no cooldown starts: a channel added later hears of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

# The states of an alert and the events of a notification (AlertState, DeliveryEvent in models.py).
PENDING = "pending"
FIRING = "firing"
RESOLVED = "resolved"

# What the evaluation does with the alert row.
NOTHING = "nothing"  # no alert, and none to open
TOUCH = "touch"  # no data: the open alert only records that it was evaluated
OPEN = "open"  # a new alert for the target
UPDATE = "update"  # the open alert goes on (pending, firing)
RESOLVE = "resolve"  # the open alert resolves

CHECK_STATUS = "check_status"  # the one kind whose threshold is reached rather than exceeded
SERVICE_UP = "service_up"  # the one kind that holds at or below its threshold (up falls)


@dataclass(frozen=True)
class RuleSpec:
    id: int
    kind: str
    threshold: float
    for_evaluations: int = 1
    repeat_interval: timedelta = timedelta(minutes=60)


@dataclass(frozen=True)
class AlertSnapshot:
    """The open (pending or firing) alert of a target, as stored."""

    state: str
    consecutive: int
    fired_at: datetime | None = None
    acknowledged: bool = False
    last_notified_at: datetime | None = None


@dataclass(frozen=True)
class SilenceSpec:
    starts_at: datetime
    ends_at: datetime
    reason: str
    rule_id: int | None = None  # None: every rule
    component: str = ""  # "": every component

    def covers(self, *, rule_id: int, component: str, now: datetime) -> bool:
        return (
            self.starts_at <= now < self.ends_at
            and (self.rule_id is None or self.rule_id == rule_id)
            and (not self.component or self.component == component)
        )


@dataclass(frozen=True)
class Context:
    """What besides the alert and the value decides whether a notification goes out."""

    component: str = ""  # the target's, which silences match
    # The latest notification of any alert with the target's dedup key (a resolved one included).
    last_notified_at: datetime | None = None
    silences: tuple[SilenceSpec, ...] = ()
    external_alerts: bool = True
    has_channels: bool = True


@dataclass(frozen=True)
class Notification:
    event: str  # FIRING or RESOLVED
    repeat: bool  # a reminder of a firing alert, not a state change
    skip_reason: str = ""  # recorded as skipped with this reason; "" means it is sent


@dataclass(frozen=True)
class Transition:
    action: str
    state: str | None = None  # the alert's state after the evaluation (None: no alert)
    consecutive: int = 0
    fired: bool = False  # it fires now
    ends_firing: bool = False  # it resolves after having fired
    notification: Notification | None = None
    notified: bool = False  # a notification goes out now: the cooldown starts
    unheard: str = ""  # the event nobody was told of, for want of a channel


def breaches(rule: RuleSpec, value: float) -> bool:
    if rule.kind == CHECK_STATUS:
        return value >= rule.threshold
    if rule.kind == SERVICE_UP:
        return value <= rule.threshold
    return value > rule.threshold


def suppression_reason(
    *, rule_id: int, component: str, silences: tuple[SilenceSpec, ...], external_alerts: bool, now: datetime
) -> str:
    """Why a notification about an alert of ``rule_id`` on ``component`` must not go out now, or ""."""
    if not external_alerts:
        return "external_alerts is off"
    for silence in silences:
        if silence.covers(rule_id=rule_id, component=component, now=now):
            return f"silenced until {silence.ends_at:%Y-%m-%d %H:%M %Z}: {silence.reason}"[:500]
    return ""


def _notify(
    event: str,
    *,
    change: bool,
    alert_notified_at: datetime | None,
    rule: RuleSpec,
    now: datetime,
    context: Context,
) -> tuple[Notification | None, bool, str]:
    """(the notification to record or None, whether it goes out, the event nobody heard of)."""
    if event == FIRING:
        last = max(filter(None, (context.last_notified_at, alert_notified_at)), default=None)
        if last is not None and now - last < rule.repeat_interval:
            return None, False, ""
    reason = suppression_reason(
        rule_id=rule.id,
        component=context.component,
        silences=context.silences,
        external_alerts=context.external_alerts,
        now=now,
    )
    if reason and not change:
        return None, False, ""
    if not context.has_channels:
        return None, False, event
    return Notification(event, repeat=not change, skip_reason=reason), not reason, ""


def next_state(
    alert: AlertSnapshot | None, rule: RuleSpec, value: float | None, now: datetime, context: Context
) -> Transition:
    """What the evaluation at ``now`` of ``rule`` on one target, observing ``value``, does to ``alert``."""
    if value is None:
        return Transition(TOUCH, state=alert.state, consecutive=alert.consecutive) if alert else Transition(NOTHING)
    if not breaches(rule, value):
        if alert is None:
            return Transition(NOTHING)
        notification, notified, unheard = None, False, ""
        if alert.state == FIRING and alert.last_notified_at is not None:  # nobody heard of the others
            notification, notified, unheard = _notify(
                RESOLVED, change=True, alert_notified_at=alert.last_notified_at, rule=rule, now=now, context=context
            )
        return Transition(
            RESOLVE,
            state=RESOLVED,
            ends_firing=alert.fired_at is not None,
            notification=notification,
            notified=notified,
            unheard=unheard,
        )
    state = alert.state if alert else PENDING
    consecutive = (alert.consecutive if alert else 0) + 1
    fired = state == PENDING and consecutive >= rule.for_evaluations
    action = UPDATE if alert else OPEN
    if fired:
        state = FIRING
        change = True
    elif state == FIRING and not (alert and alert.acknowledged):
        change = False  # a reminder, when due
    else:
        return Transition(action, state=state, consecutive=consecutive)
    notification, notified, unheard = _notify(
        FIRING,
        change=change,
        alert_notified_at=alert.last_notified_at if alert else None,
        rule=rule,
        now=now,
        context=context,
    )
    return Transition(
        action,
        state=state,
        consecutive=consecutive,
        fired=fired,
        notification=notification,
        notified=notified,
        unheard=unheard,
    )
