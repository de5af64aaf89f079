"""Reads of alerting for the rest of the house: the dashboard's open alerts and the health check's channels."""

from __future__ import annotations

from alerting.models import Alert, AlertState, NotificationChannel


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
