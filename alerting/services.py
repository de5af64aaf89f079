"""Every write of alerting: channels, rules, silences, acknowledgements, rule evaluation and deliveries.

Operator changes are validated, atomic and audited. Evaluation is the control plane's own work (run by
beat after the scheduled checks): it records alert state in the Alert rows, not in the audit trail.
Notifications are queued after commit, so a rolled-back evaluation never sends anything.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Max
from django.utils import timezone

from alerting import notifications, service_rules, state
from alerting.models import (
    ANY_COMPONENT,
    PERFORMANCE_KINDS,
    SERVICE_KINDS,
    SLO_PAGE_SEVERITIES,
    Alert,
    AlertRule,
    AlertState,
    ChannelKind,
    Delivery,
    DeliveryEvent,
    DeliveryStatus,
    NotificationChannel,
    RuleKind,
    Silence,
)
from alerting.signals import alert_fired
from alerting.tasks import deliver_notification
from controlplane.audit import Actor, audit_record, snapshot
from controlplane.errors import InvalidInput
from controlplane.models import Environment
from flags.selectors import EXTERNAL_ALERTS, PERFORMANCE_ALERTS, is_on
from monitoring.selectors import job_monitor_states, latest_health, recent_statuses, request_figures, slo_burn_levels

logger = logging.getLogger(__name__)

CHANNEL_FIELDS = ("name", "kind", "url", "email_recipients", "enabled", "flag_change_environments")
# A new channel hears of flag changes in every environment but this one, unless told otherwise.
QUIET_FLAG_ENVIRONMENT = "development"
RULE_FIELDS = (
    "name", "kind", "component", "measurement", "service", "threshold", "window_minutes", "for_evaluations",
    "severity", "repeat_interval_minutes", "enabled", "description", "recovery_plan", "recovery_auto",
)  # fmt: skip


class InvalidAlertSetting(InvalidInput):
    """A channel, rule, silence or acknowledgement that cannot be applied; names the field (422)."""


def _first_error(exc: ValidationError) -> InvalidAlertSetting:
    if hasattr(exc, "error_dict"):
        name, errors = next(iter(exc.message_dict.items()))
        return InvalidAlertSetting("body" if name == "__all__" else name, errors[0])
    return InvalidAlertSetting("body", exc.messages[0])


def _assign(instance: Any, data: Any, allowed: Iterable[str]) -> None:
    allowed = tuple(allowed)
    if not isinstance(data, dict):
        raise InvalidAlertSetting("body", "must be an object")
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise InvalidAlertSetting(unknown[0], f"unknown field; known fields: {', '.join(allowed)}")
    for key, value in data.items():
        setattr(instance, key, value.strip() if isinstance(value, str) and key != "description" else value)


def _validate(instance: Any, *, exclude: list[str] | None = None) -> None:
    """The model's own checks (field types, choices, uniqueness, clean()) as one InvalidAlertSetting."""
    try:
        instance.full_clean(exclude=exclude)
    except ValidationError as exc:
        raise _first_error(exc) from None


# --- Channels -----------------------------------------------------------------------------------


def _channel_state(channel: NotificationChannel) -> dict[str, Any]:
    state = snapshot(channel, fields=list(CHANNEL_FIELDS))
    # The URL of a Slack webhook is its credential: audit diffs keep host and a fingerprint only.
    state["url"] = channel.masked_url
    return state


def _normalise_channel(channel: NotificationChannel) -> None:
    if channel.kind == ChannelKind.EMAIL:
        channel.url = ""
        if isinstance(channel.email_recipients, str):
            channel.email_recipients = [a.strip() for a in channel.email_recipients.replace(",", "\n").split()]
    elif channel.kind in (ChannelKind.SLACK, ChannelKind.WEBHOOK):
        channel.email_recipients = []


def channel_create(*, data: dict[str, Any], actor: Actor) -> NotificationChannel:
    """Create a channel. Slack and webhook channels need an http(s) URL, e-mail ones recipients."""
    channel = NotificationChannel()
    if "flag_change_environments" not in data:
        channel.flag_change_environments = sorted(
            Environment.objects.exclude(name=QUIET_FLAG_ENVIRONMENT).values_list("name", flat=True)
        )
    _assign(channel, data, CHANNEL_FIELDS)
    _normalise_channel(channel)
    _validate(channel)
    try:
        with transaction.atomic():
            channel.save()
            audit_record(actor=actor, action="notificationchannel.create", obj=channel, after=_channel_state(channel))
    except IntegrityError:  # a channel of that name was created meanwhile
        raise InvalidAlertSetting("name", "a channel with this name exists") from None
    return channel


def channel_update(*, channel: NotificationChannel, changes: dict[str, Any], actor: Actor) -> NotificationChannel:
    """Change a channel's fields; the audit diff shows the URL masked."""
    with transaction.atomic():
        locked = NotificationChannel.objects.select_for_update().get(pk=channel.pk)
        before = _channel_state(locked)
        before_url = locked.url
        _assign(locked, changes, CHANNEL_FIELDS)
        _normalise_channel(locked)
        _validate(locked)
        after = _channel_state(locked)
        if after != before or locked.url != before_url:
            locked.save()
            audit_record(actor=actor, action="notificationchannel.update", obj=locked, before=before, after=after)
    return locked


def channel_delete(*, channel: NotificationChannel, actor: Actor) -> None:
    """Delete a channel. One with deliveries is protected (the log keeps pointing at it): disable it."""
    with transaction.atomic():
        audit_record(actor=actor, action="notificationchannel.delete", obj=channel, before=_channel_state(channel))
        channel.delete()


def channel_send_test(*, channel: NotificationChannel, actor: Actor) -> Delivery:
    """Queue a test notification to ``channel`` (after commit). Obeys ``external_alerts`` like any other."""
    reason = "" if is_on(EXTERNAL_ALERTS) else "external_alerts is off"
    with transaction.atomic(durable=True):  # the delivery is queued after commit: never nested
        delivery = _record_deliveries(
            alert=None,
            channels=[channel],
            event=DeliveryEvent.TEST,
            payload=notifications.channel_test_payload(channel),
            skip_reason=reason,
        )[0]
        audit_record(actor=actor, action="notificationchannel.test", obj=channel, after={"delivery": delivery.pk})
    return delivery


def event_notify(
    *,
    kind: str,
    title: str,
    severity: str,
    details: dict[str, Any],
    channels: list[NotificationChannel] | None = None,
) -> list[Delivery]:
    """Tell ``channels`` (every enabled one when None) that something happened (a deployment started
    or ended, a flag changed).

    Not an alert: no rule, no state, no silence; the ``external_alerts`` flag still holds it back.
    Deliveries are recorded and retried like an alert's.
    """
    if channels is None:
        channels = list(NotificationChannel.objects.filter(enabled=True))
    if not channels:
        return []
    payload = {
        "event": "event",
        "kind": kind,
        "alert": title,
        "state": kind,
        "severity": severity,
        "value": None,
        "threshold": None,
        "unit": "",
        "rule": None,
        "component": kind,
        "measurement": None,
        "started_at": timezone.now().isoformat(),
        "fired_at": None,
        "resolved_at": None,
        "dedup_key": f"{kind}:{details.get(kind, '')}",
        "alert_id": None,
        "details": details,
    }
    reason = "" if is_on(EXTERNAL_ALERTS) else "external_alerts is off"
    with transaction.atomic():
        return _record_deliveries(
            alert=None, channels=channels, event=DeliveryEvent.EVENT, payload=payload, skip_reason=reason
        )


def flag_change_notify(
    *, flag: str, environment: str, before: str, after: str, actor: str, action: str
) -> list[Delivery]:
    """``flags.signals.flag_changed``: tell the enabled channels chosen for ``environment`` (their
    ``flag_change_environments``) which flag moved, from what to what, and who moved it."""
    channels = [
        channel
        for channel in NotificationChannel.objects.filter(enabled=True)
        if environment in (channel.flag_change_environments or [])
    ]
    if not channels:
        return []
    return event_notify(
        kind="flag",
        title=f"Flag {flag} in {environment}: {before} -> {after} (by {actor})",
        severity="info",
        details={
            "flag": flag,
            "environment": environment,
            "before": before,
            "after": after,
            "by": actor,
            "action": action,
        },
        channels=channels,
    )


# --- Rules --------------------------------------------------------------------------------------


def _rule_state(rule: AlertRule) -> dict[str, Any]:
    return snapshot(rule, fields=[*RULE_FIELDS, "channels"])


def _set_channels(rule: AlertRule, channels: Any) -> None:
    if channels is None:
        return
    if not isinstance(channels, list | tuple) and not hasattr(channels, "__iter__"):
        raise InvalidAlertSetting("channels", "must be a list of channels")
    ids = [c.pk if isinstance(c, NotificationChannel) else c for c in channels]
    found = set(NotificationChannel.objects.filter(pk__in=ids).values_list("pk", flat=True))
    missing = [i for i in ids if i not in found]
    if missing:
        raise InvalidAlertSetting("channels", f"no channel with id {missing[0]!r}")
    rule.channels.set(found)


def rule_create(*, data: dict[str, Any], actor: Actor) -> AlertRule:
    """Create an alert rule (``channels``: channels or their ids)."""
    data = dict(data)
    channels = data.pop("channels", None)
    rule = AlertRule()
    _assign(rule, data, RULE_FIELDS)
    _validate(rule)
    try:
        with transaction.atomic():
            rule.save()
            _set_channels(rule, channels)
            audit_record(actor=actor, action="alertrule.create", obj=rule, after=_rule_state(rule))
    except IntegrityError:
        raise InvalidAlertSetting("name", "a rule with this name exists") from None
    return rule


def rule_update(*, rule: AlertRule, changes: dict[str, Any], actor: Actor) -> AlertRule:
    """Change a rule. Open alerts keep going; the next evaluation applies the new condition."""
    changes = dict(changes)
    channels = changes.pop("channels", None)
    with transaction.atomic():
        locked = AlertRule.objects.select_for_update().get(pk=rule.pk)
        before = _rule_state(locked)
        _assign(locked, changes, RULE_FIELDS)
        _validate(locked)
        locked.save()
        _set_channels(locked, channels)
        after = _rule_state(locked)
        if after != before:
            audit_record(actor=actor, action="alertrule.update", obj=locked, before=before, after=after)
    return locked


def rule_delete(*, rule: AlertRule, actor: Actor) -> None:
    """Delete a rule and its alerts; the delivery log keeps its rows (without the alert)."""
    with transaction.atomic():
        audit_record(actor=actor, action="alertrule.delete", obj=rule, before=_rule_state(rule))
        rule.delete()


# The report's two shipped rules, by name: (their kind as shipped, their kind on a service, how the
# threshold converts). As shipped they watch the control plane's own requests.
SHIPPED_PERFORMANCE_RULES = {
    "p95 latency over 2000 ms": (RuleKind.P95_LATENCY_MS, RuleKind.SERVICE_P95, 0.001),  # ms -> s
    "error rate over 1 %": (RuleKind.ERROR_RATE, RuleKind.SERVICE_ERROR_RATIO, 1.0),  # percent either way
}
_SHIPPED_DESCRIPTIONS = {
    RuleKind.SERVICE_P95: "p95 of {service}'s requests over the last {window} minutes (monitoring.selectors); "
    "fires when it has stayed over the threshold for {hold} evaluations.",
    RuleKind.SERVICE_ERROR_RATIO: "Share of {service}'s requests that failed over the last {window} minutes, in "
    "percent (monitoring.selectors); fires when it has stayed over the threshold for {hold} evaluations.",
}


def shipped_rules_follow_service(*, service: str, actor: Actor) -> list[AlertRule]:
    """Point the report's two shipped rules (p95 over 2 s, error rate over 1 %) at the product's backend.

    The report's targets are about the product, not the control plane: once a service is configured, the
    shipped ``p95 latency over 2000 ms`` becomes a ``service_p95`` rule on it (2 s) and ``error rate over
    1 %`` a ``service_error_ratio`` rule (1 %); their window, hold, severity and channels stay. It runs

    - by itself when the first service is created (``alerting.apps.follow_first_service``, on
      monitoring.Service's post_save, connected by the model's label: alerting imports no monitoring model);
    - as ``manage.py shipped_rules_follow_service <service>``, to choose another service.

    Only a rule still watching the control plane's requests (its shipped kind, no service) moves, under its
    row lock, so a rule an operator changed stays as they made it and a second call changes nothing; the
    moved rule's open alerts, which were about the control plane's requests, close quietly. An operator who
    wants those alerts too adds a rule of the old kind. Returns the rules moved.
    """
    moved = []
    for name, (shipped_kind, kind, scale) in SHIPPED_PERFORMANCE_RULES.items():
        with transaction.atomic():
            rule = AlertRule.objects.select_for_update().filter(name=name, kind=shipped_kind, service="").first()
            if rule is None:
                continue
            description = _SHIPPED_DESCRIPTIONS[kind].format(
                service=service, window=rule.window_minutes, hold=rule.for_evaluations
            )
            changes = {
                "kind": kind,
                "service": service,
                "threshold": rule.threshold * scale,
                "description": description,
            }
            moved.append(rule_update(rule=rule, changes=changes, actor=actor))
            now = timezone.now()
            Alert.objects.open().filter(rule=rule).update(
                state=AlertState.RESOLVED, resolved_at=now, last_evaluated_at=now
            )
    return moved


# --- Silences and acknowledgements ----------------------------------------------------------------


def _silence_state(silence: Silence) -> dict[str, Any]:
    return snapshot(silence, fields=["starts_at", "ends_at", "rule", "component", "reason", "created_by", "owner"])


def silence_create(
    *,
    ends_at: object,
    reason: object,
    actor: Actor,
    starts_at: datetime | None = None,
    rule: AlertRule | None = None,
    component: str = "",
    owner: str = "",
) -> Silence:
    """A maintenance window: matching alerts are recorded but notify nobody until ``ends_at``.

    ``ends_at`` and ``reason`` are checked here, whatever a caller was sent (a datetime, some text).
    """
    now = timezone.now()
    starts_at = starts_at or now
    if not isinstance(reason, str) or not reason.strip():
        raise InvalidAlertSetting("reason", "say why (the maintenance, the incident)")
    if not isinstance(ends_at, datetime) or not isinstance(starts_at, datetime):
        raise InvalidAlertSetting("ends_at", "must be a date and time")
    if timezone.is_naive(ends_at) or timezone.is_naive(starts_at):
        raise InvalidAlertSetting("ends_at", "must carry a time zone")
    if ends_at <= starts_at:
        raise InvalidAlertSetting("ends_at", "must be after the start")
    if ends_at <= now:
        raise InvalidAlertSetting("ends_at", "must be in the future")
    silence = Silence(
        starts_at=starts_at,
        ends_at=ends_at,
        rule=rule,
        component=(component or "").strip(),
        reason=reason.strip(),
        created_by=actor.user if actor.user is not None and actor.user.pk else None,
        owner=owner,
    )
    _validate(silence)
    with transaction.atomic():
        silence.save()
        audit_record(actor=actor, action="silence.create", obj=silence, after=_silence_state(silence))
    return silence


def silence_end(*, silence: Silence, actor: Actor) -> Silence:
    """End a silence now (it stays in the list, as a record of the window)."""
    now = timezone.now()
    with transaction.atomic(durable=True):
        locked = Silence.objects.select_for_update().get(pk=silence.pk)
        if locked.ends_at <= now:
            return locked
        before = _silence_state(locked)
        locked.ends_at = max(now, locked.starts_at)
        locked.save(update_fields=["ends_at"])
        audit_record(actor=actor, action="silence.end", obj=locked, before=before, after=_silence_state(locked))
    return locked


def silences_hold(*, rule_names: list[str], owner: str, reason: str, ends_at: datetime, actor: Actor) -> list[Silence]:
    """Silence the rules named ``rule_names`` from now, on behalf of ``owner`` (e.g. "deployment:42"),
    until ``silences_release`` ends them (``ends_at`` is only the bound should the owner never do so).
    Names of no rule are skipped (a rule deleted since they were checked); each silence is audited."""
    if not owner:
        raise InvalidAlertSetting("owner", "required: what holds the silences")
    rules = {rule.name: rule for rule in AlertRule.objects.filter(name__in=rule_names)}
    return [
        silence_create(ends_at=ends_at, reason=reason, actor=actor, rule=rules[name], owner=owner)
        for name in dict.fromkeys(rule_names)
        if name in rules
    ]


def silences_release(*, owner: str, actor: Actor) -> list[Silence]:
    """End now every silence ``owner`` still holds (each end audited); returns them."""
    if not owner:
        raise InvalidAlertSetting("owner", "required: what holds the silences")
    held = Silence.objects.filter(owner=owner, ends_at__gt=timezone.now()).order_by("pk")
    return [silence_end(silence=silence, actor=actor) for silence in held]


def silence_delete(*, silence: Silence, actor: Actor) -> None:
    with transaction.atomic():
        audit_record(actor=actor, action="silence.delete", obj=silence, before=_silence_state(silence))
        silence.delete()


def alert_acknowledge(*, alert: Alert, actor: Actor) -> Alert:
    """Someone is on it: the alert stops sending reminders (its resolution is still announced)."""
    with transaction.atomic(durable=True):
        locked = Alert.objects.select_for_update().get(pk=alert.pk)
        if locked.state == AlertState.RESOLVED:
            raise InvalidAlertSetting("state", "the alert is resolved; nothing to acknowledge")
        if locked.acknowledged_at is not None:
            return locked
        before = snapshot(locked, fields=["state", "acknowledged_by", "acknowledged_at"])
        locked.acknowledged_at = timezone.now()
        locked.acknowledged_by = actor.user if actor.user is not None and actor.user.pk else None
        locked.save(update_fields=["acknowledged_at", "acknowledged_by"])
        audit_record(
            actor=actor,
            action="alert.acknowledge",
            obj=locked,
            before=before,
            after=snapshot(locked, fields=["state", "acknowledged_by", "acknowledged_at"]),
        )
    return locked


# --- Evaluation ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """What one alert of a rule is about: the whole product (request metrics) or one check."""

    dedup_key: str
    component: str = ""
    measurement: str = ""


@dataclass
class EvaluationSummary:
    rules: int = 0
    fired: list[str] = field(default_factory=list)
    resolved: list[str] = field(default_factory=list)
    deliveries: int = 0
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "rules": self.rules,
            "fired": self.fired,
            "resolved": self.resolved,
            "deliveries": self.deliveries,
            "errors": self.errors,
        }


def backup_age_hours(now: datetime) -> float | None:
    """Hours since the oldest "latest verified backup" among enabled targets (None: no target).

    A target without any verified backup counts from its creation, so a first backup that never
    happens alerts like a stale one.
    """
    from backups.selectors import latest_verified_age_hours

    return latest_verified_age_hours(now=now)


def _backup_failures(rule: AlertRule) -> dict[Target, float | None]:
    """One target per enabled backup target: 1 while its latest backup or verification failed. An alert
    open for anything else (a target disabled or gone, a drill from before drills had their rule) reads 0."""
    from backups.selectors import failures_by_target

    failed = {name: 1.0 if failure else 0.0 for name, failure in failures_by_target().items()}
    for name in rule.alerts.open().values_list("measurement", flat=True):
        failed.setdefault(name, 0.0)
    return {Target(f"rule:{rule.pk}:backups:{name}", "backups", name): value for name, value in failed.items()}


def _drill_failures(rule: AlertRule) -> dict[Target, float | None]:
    """One target per recovery plan drilled (or drilled before): 1 while its latest restore drill failed."""
    from backups.selectors import drill_failures

    return {
        Target(f"rule:{rule.pk}:drills:{plan}", "drills", plan): 1.0 if failure else 0.0
        for plan, failure in drill_failures().items()
    }


def _jobs_down(rule: AlertRule) -> dict[Target, float | None]:
    """One target per job monitor, 1 while it is down; a monitor deleted with an alert open reads 0."""
    down = {name: 1.0 if state == "down" else 0.0 for name, state in job_monitor_states().items()}
    for name in rule.alerts.open().values_list("measurement", flat=True):
        down.setdefault(name, 0.0)
    return {Target(f"rule:{rule.pk}:jobs:{name}", "jobs", name): value for name, value in down.items()}


def _slo_burns(rule: AlertRule, now: datetime) -> dict[Target, float | None]:
    """One target per SLO with alerting on (of the rule's service, or of every service): how far the
    workbook's page (a critical rule) or ticket alerts are past their burn-rate factors, None for no data.
    An SLO gone (deleted, alerting off, its service disabled) with an alert open reads 0 and resolves."""
    severity = "page" if rule.severity in SLO_PAGE_SEVERITIES else "ticket"
    levels = {
        key: level
        for key, level in slo_burn_levels(severity, now).items()
        if not rule.service or key[0] == rule.service
    }
    for service, name in rule.alerts.open().values_list("component", "measurement"):
        levels.setdefault((service, name), 0.0)
    return {
        Target(f"rule:{rule.pk}:slo:{service}/{name}", service, name): value
        for (service, name), value in levels.items()
    }


def _check_targets(rule: AlertRule) -> list[Target]:
    """The checks a check rule watches: those stored in the last hour, plus those it has alerts open for."""
    keys = set(latest_health())
    keys |= set(rule.alerts.open().values_list("component", "measurement"))
    targets = []
    for component, measurement in sorted(keys):
        if rule.component != ANY_COMPONENT and component != rule.component:
            continue
        if rule.measurement and measurement != rule.measurement:
            continue
        targets.append(Target(f"rule:{rule.pk}:{component}:{measurement}", component, measurement))
    return targets


def _observe(rule: AlertRule, now: datetime) -> dict[Target, float | None]:
    """The rule's current value per target; None means no data (nothing changes on no data)."""
    if rule.kind in (RuleKind.P95_LATENCY_MS, RuleKind.ERROR_RATE):
        figures = request_figures(now - timedelta(minutes=rule.window_minutes), now)
        if rule.kind == RuleKind.P95_LATENCY_MS:
            value = figures.p95_ms
        else:
            value = None if figures.error_rate is None else round(figures.error_rate * 100, 4)
        return {Target(f"rule:{rule.pk}"): value}
    if rule.kind == RuleKind.BACKUP_AGE_HOURS:
        return {Target(f"rule:{rule.pk}"): backup_age_hours(now)}
    if rule.kind == RuleKind.BACKUP_FAILED:
        return _backup_failures(rule)
    if rule.kind == RuleKind.DRILL_FAILED:
        return _drill_failures(rule)
    if rule.kind == RuleKind.JOB_DOWN:
        return _jobs_down(rule)
    if rule.kind == RuleKind.SLO_BURN:
        return _slo_burns(rule, now)
    if rule.kind in SERVICE_KINDS:
        signal = service_rules.SIGNALS[RuleKind(rule.kind)]
        target = Target(f"rule:{rule.pk}:service:{rule.service}", rule.service, signal.value)
        return {target: service_rules.service_value(rule, now)}
    values: dict[Target, float | None] = {}
    if rule.kind == RuleKind.CHECK_STATUS:
        needed = int(rule.threshold)
        for target in _check_targets(rule):
            statuses = recent_statuses(target.component, target.measurement, needed)
            running = 0
            for status in statuses:  # newest first: the failures running up to now
                if status != "fail":
                    break
                running += 1
            values[target] = float(running) if statuses else None
    elif rule.kind == RuleKind.CHECK_LATENCY_MS:
        latest = latest_health()
        for target in _check_targets(rule):
            row = latest.get((target.component, target.measurement))
            values[target] = row.value if row is not None else None
    return values


def _active_silences(now: datetime) -> tuple[state.SilenceSpec, ...]:
    return tuple(
        state.SilenceSpec(
            starts_at=silence.starts_at,
            ends_at=silence.ends_at,
            reason=silence.reason,
            rule_id=silence.rule_id,
            component=silence.component,
        )
        for silence in Silence.objects.filter(ends_at__gt=now, starts_at__lte=now)
    )


def _record_deliveries(
    *,
    alert: Alert | None,
    channels: list[NotificationChannel],
    event: str,
    payload: dict[str, Any],
    skip_reason: str,
) -> list[Delivery]:
    """One Delivery per channel; the pending ones are queued for a worker after commit."""
    rows = [
        Delivery(
            alert=alert,
            channel=channel,
            event=event,
            payload=payload,
            status=DeliveryStatus.SKIPPED if skip_reason else DeliveryStatus.PENDING,
            last_error=skip_reason,
        )
        for channel in channels
    ]
    for row in rows:
        row.save()
    if not skip_reason:
        for row in rows:
            deliver_notification.delay_on_commit(row.pk)
    return rows


def _rule_spec(rule: AlertRule) -> state.RuleSpec:
    return state.RuleSpec(
        id=rule.pk,
        kind=rule.kind,
        threshold=rule.threshold,
        for_evaluations=rule.for_evaluations,
        repeat_interval=timedelta(minutes=rule.repeat_interval_minutes),
    )


def _snapshot(alert: Alert) -> state.AlertSnapshot:
    return state.AlertSnapshot(
        state=alert.state,
        consecutive=alert.consecutive,
        fired_at=alert.fired_at,
        acknowledged=alert.acknowledged_at is not None,
        last_notified_at=alert.last_notified_at,
    )


class _NoChannelWarnings:
    """A rule with no channel says so once an hour, not at every evaluation (once a minute)."""

    interval_seconds = 3600.0

    def __init__(self) -> None:
        self._last: dict[int, float] = {}

    def warn(self, rule: AlertRule, event: str) -> None:
        last = self._last.get(rule.pk)
        if last is None or time.monotonic() - last >= self.interval_seconds:
            self._last[rule.pk] = time.monotonic()
            logger.warning("alert rule %s has no enabled channel: %s not sent", rule.name, event)


_no_channel = _NoChannelWarnings()


def _apply(
    transition: state.Transition,
    *,
    alert: Alert | None,
    rule: AlertRule,
    target: Target,
    value: float | None,
    now: datetime,
    channels: list[NotificationChannel],
    summary: EvaluationSummary,
) -> None:
    """Store what ``state.next_state`` decided: the alert row, then the deliveries (queued after commit)."""
    if transition.action == state.NOTHING:
        return
    if transition.action == state.TOUCH:
        assert alert is not None
        alert.last_evaluated_at = now
        alert.save(update_fields=["last_evaluated_at"])
        return
    if alert is None:
        alert = Alert(
            rule=rule,
            dedup_key=target.dedup_key,
            component=target.component,
            measurement=target.measurement,
            started_at=now,
        )
    assert transition.state is not None  # only NOTHING, returned above, leaves no state
    alert.state = transition.state
    alert.consecutive = transition.consecutive
    alert.last_value = value
    alert.last_evaluated_at = now
    if transition.fired:
        alert.fired_at = now
    if transition.action == state.RESOLVE:
        alert.resolved_at = now
    if transition.notified:
        alert.last_notified_at = now
    try:
        with transaction.atomic():  # a savepoint: a concurrent evaluation may have opened it
            alert.save()
    except IntegrityError:
        logger.info("alert %s opened by a concurrent evaluation; skipped", target.dedup_key)
        return
    if transition.fired:
        summary.fired.append(target.dedup_key)
        _announce_firing(alert, rule)
    if transition.ends_firing:
        summary.resolved.append(target.dedup_key)
    if transition.unheard:
        _no_channel.warn(rule, transition.unheard)
    notification = transition.notification
    if notification is None:
        return
    payload = notifications.alert_payload(alert, notification.event)
    payload["repeat"] = notification.repeat
    rows = _record_deliveries(
        alert=alert, channels=channels, event=notification.event, payload=payload, skip_reason=notification.skip_reason
    )
    if not notification.skip_reason:
        summary.deliveries += len(rows)


def _announce_firing(alert: Alert, rule: AlertRule) -> None:
    """Tell whoever listens (deployments: the rule's recovery plan) that ``alert`` fired, after commit."""
    details = {
        "alert_id": alert.pk,
        "rule_name": rule.name,
        "recovery_plan": rule.recovery_plan,
        "recovery_auto": rule.recovery_auto,
    }

    def send() -> None:
        for receiver, result in alert_fired.send_robust(sender=Alert, **details):
            if isinstance(result, Exception):  # one listener's failure is not the evaluation's
                logger.error("alert %s: %s failed: %s", details["alert_id"], receiver, result)

    transaction.on_commit(send)


def alert_recovery_claim(*, alert_id: int) -> Alert | None:
    """Claim the running of its rule's recovery plan for a firing alert: the alert, or None when it is no
    longer firing or its plan was started already. A conditional UPDATE, so two listeners (or one told
    twice) start it once."""
    claimed = Alert.objects.filter(pk=alert_id, state=AlertState.FIRING, recovery_started_at__isnull=True).update(
        recovery_started_at=timezone.now()
    )
    if not claimed:
        return None
    return Alert.objects.select_related("rule").get(pk=alert_id)


def _last_notified_at(dedup_key: str) -> datetime | None:
    """The cooldown's start: the latest notification of any alert with this key, resolved ones included."""
    return Alert.objects.filter(dedup_key=dedup_key).aggregate(last=Max("last_notified_at"))["last"]


def _rule_evaluate(
    rule: AlertRule,
    now: datetime,
    *,
    silences: tuple[state.SilenceSpec, ...],
    external_alerts: bool,
    summary: EvaluationSummary,
) -> None:
    """One rule at ``now``: for each target, load the open alert, ask ``state.next_state``, apply it."""
    spec = _rule_spec(rule)
    channels = list(rule.channels.filter(enabled=True))
    for target, value in _observe(rule, now).items():
        alert = Alert.objects.select_for_update().filter(dedup_key=target.dedup_key).open().first()
        breaching = value is not None and state.breaches(spec, value)
        context = state.Context(
            component=target.component,
            # Only a firing notification looks at the cooldown: read it only when one may go out.
            last_notified_at=_last_notified_at(target.dedup_key) if breaching else None,
            silences=silences,
            external_alerts=external_alerts,
            has_channels=bool(channels),
        )
        transition = state.next_state(_snapshot(alert) if alert else None, spec, value, now, context)
        _apply(
            transition,
            alert=alert,
            rule=rule,
            target=target,
            value=value,
            now=now,
            channels=channels,
            summary=summary,
        )


def alert_rules_evaluate(now: datetime | None = None) -> EvaluationSummary:
    """Evaluate every enabled rule against the stored data: pending -> firing -> resolved.

    Each rule in its own transaction (one broken rule does not stop the others), with the rule row
    locked so that two evaluations of it never interleave. Notifications go out after commit.
    """
    now = now or timezone.now()
    summary = EvaluationSummary()
    rules = AlertRule.objects.filter(enabled=True)
    # A disabled rule watches nothing: its open alerts close, quietly.
    Alert.objects.open().filter(rule__enabled=False).update(
        state=AlertState.RESOLVED, resolved_at=now, last_evaluated_at=now
    )
    # performance_alerts off: the latency and error rules (the control plane's requests' and the
    # services') are as if disabled. A missing flag leaves them on, as before anything read it.
    if not is_on(PERFORMANCE_ALERTS, default=True):
        rules = rules.exclude(kind__in=PERFORMANCE_KINDS)
        Alert.objects.open().filter(rule__kind__in=PERFORMANCE_KINDS).update(
            state=AlertState.RESOLVED, resolved_at=now, last_evaluated_at=now
        )
    silences = _active_silences(now)
    external_alerts = is_on(EXTERNAL_ALERTS)
    for rule_id in rules.values_list("pk", flat=True):
        try:
            with transaction.atomic():
                rule = AlertRule.objects.select_for_update().filter(pk=rule_id, enabled=True).first()
                if rule is None:
                    continue
                _rule_evaluate(rule, now, silences=silences, external_alerts=external_alerts, summary=summary)
                summary.rules += 1
        except Exception as exc:  # a broken rule must not stop the others
            logger.exception("alert rule %s could not be evaluated", rule_id)
            summary.errors.append(f"rule {rule_id}: {type(exc).__name__}")
    return summary


# --- Delivery -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class AttemptOutcome:
    status: str
    retry: bool = False


def _late_suppression(delivery: Delivery) -> str:
    """Checked again when sending: the flag may have been turned off, a silence set, the channel disabled."""
    if not is_on(EXTERNAL_ALERTS):
        return "external_alerts is off"
    if delivery.event == DeliveryEvent.TEST:
        return ""
    if delivery.event == DeliveryEvent.EVENT and not is_on(EXTERNAL_ALERTS):
        return "external_alerts is off"
    if not delivery.channel.enabled:
        return "the channel is disabled"
    if delivery.alert is not None:
        now = timezone.now()
        return state.suppression_reason(
            rule_id=delivery.alert.rule_id,
            component=delivery.alert.component,
            silences=_active_silences(now),
            external_alerts=True,  # checked above
            now=now,
        )
    return ""


def delivery_attempt(*, delivery_id: int, final: bool) -> AttemptOutcome:
    """Make one attempt at sending a delivery and record it (attempts, status, error, response status).

    A transient failure (connection, timeout, HTTP 5xx or 429) leaves it pending for a retry unless
    ``final``; any other failure is final. Idempotent: a delivery no longer pending is left alone, and
    a conditional update on ``attempts`` lets only one worker make each attempt.
    """
    delivery = Delivery.objects.select_related("channel", "alert__rule").filter(pk=delivery_id).first()
    if delivery is None:
        return AttemptOutcome("missing")
    if delivery.status != DeliveryStatus.PENDING:
        return AttemptOutcome(delivery.status)
    now = timezone.now()
    claimed = Delivery.objects.filter(pk=delivery.pk, status=DeliveryStatus.PENDING, attempts=delivery.attempts).update(
        attempts=delivery.attempts + 1, last_attempt_at=now
    )
    if not claimed:
        return AttemptOutcome("claimed")
    reason = _late_suppression(delivery)
    if reason:
        Delivery.objects.filter(pk=delivery.pk).update(status=DeliveryStatus.SKIPPED, last_error=reason)
        return AttemptOutcome(DeliveryStatus.SKIPPED)
    try:
        result = notifications.send(delivery.channel, delivery.payload)
    except notifications.DeliveryError as exc:
        status = DeliveryStatus.PENDING if exc.transient and not final else DeliveryStatus.FAILED
        Delivery.objects.filter(pk=delivery.pk).update(
            status=status, last_error=str(exc)[:500], response_status=exc.response_status
        )
        logger.warning(
            "notification %s to channel %s failed (attempt %s, %s): %s",
            delivery.pk, delivery.channel.name, delivery.attempts + 1, status, exc,
        )  # fmt: skip
        return AttemptOutcome(status, retry=status == DeliveryStatus.PENDING)
    Delivery.objects.filter(pk=delivery.pk).update(
        status=DeliveryStatus.SENT, sent_at=timezone.now(), last_error="", response_status=result.response_status
    )
    logger.info("notification %s (%s) sent to channel %s", delivery.pk, delivery.event, delivery.channel.name)
    return AttemptOutcome(DeliveryStatus.SENT)
