"""Alerting's production readiness item: an alert channel that someone reads."""

from __future__ import annotations

from controlplane.readiness import PASS, WARN, Item, unreadable


def alert_channel() -> Item:
    from django.db import DatabaseError

    from alerting.models import NotificationChannel

    try:
        channels = NotificationChannel.objects.filter(enabled=True).count()
    except DatabaseError as exc:
        return unreadable("alert_channel", "channels", exc)
    if not channels:
        return Item("alert_channel", WARN, "alerts notify nobody", "add a Slack, e-mail or webhook channel in admin")
    return Item("alert_channel", PASS, f"{channels} enabled channel(s)")
