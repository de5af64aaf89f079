from __future__ import annotations

from django.utils import timezone

from monitoring.models import Heartbeat


def heartbeat_record(*, name: str, hostname: str) -> Heartbeat:
    """Store that ``name`` is alive now (an upsert: one row per name)."""
    heartbeat, _ = Heartbeat.objects.update_or_create(
        name=name, defaults={"last_seen": timezone.now(), "hostname": hostname[:255]}
    )
    return heartbeat
