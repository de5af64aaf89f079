"""Reads of alerting for the rest of the house: the dashboard's open alerts and the health check's channels."""

from __future__ import annotations

from alerting.models import Alert, AlertRule, AlertState, NotificationChannel


def open_alerts(limit: int = 20) -> list[Alert]:
    """Pending and firing alerts, newest first, with their rules (the dashboard's alert list)."""
    return list(Alert.objects.open().select_related("rule").order_by("-started_at")[:limit])


def alert_get(alert_id: int) -> Alert | None:
    """One alert with its rule, or None."""
    return Alert.objects.select_related("rule").filter(pk=alert_id).first()


def enabled_channel_count() -> int:
    """How many channels notifications can go to."""
    return NotificationChannel.objects.filter(enabled=True).count()


def firing_unacknowledged(alerts: list[Alert]) -> list[Alert]:
    """Of ``alerts``, those firing that nobody has acknowledged (they lower the dashboard's score)."""
    return [a for a in alerts if a.state == AlertState.FIRING and a.acknowledged_at is None]


def unknown_rule_names(names: list[str]) -> list[str]:
    """Of ``names``, those that name no alert rule (in their order)."""
    known = set(AlertRule.objects.filter(name__in=names).values_list("name", flat=True))
    return [name for name in names if name not in known]


def rule_names() -> list[str]:
    """Every alert rule's name, in order (for an error that lists them)."""
    return list(AlertRule.objects.order_by("name").values_list("name", flat=True))


def existing_rule_names(names: list[str]) -> set[str]:
    """Of ``names``, those of alert rules that exist (a deploy analysis checks its conditions' rules)."""
    return set(AlertRule.objects.filter(name__in=names).values_list("name", flat=True))


def firing_rule_names(names: list[str]) -> list[str]:
    """Of the rules named, those with an alert firing now, by name (a deploy analysis' "none firing")."""
    firing = Alert.objects.filter(rule__name__in=names, state=AlertState.FIRING)
    return sorted(set(firing.values_list("rule__name", flat=True)))
