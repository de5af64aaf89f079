"""The flags tables retention prunes (registered in ``apps.py``; ``controlplane.retention`` runs them)."""

from __future__ import annotations

from datetime import datetime

from django.db.models import QuerySet

from controlplane.retention import Rule
from flags.models import FlagUsage, ScheduledChange, ScheduledChangeStatus, SdkInstance


def _finished_schedules(cutoff: datetime) -> QuerySet:
    # Applied, skipped or cancelled changes due before the cutoff; pending ones always stay.
    return ScheduledChange.objects.exclude(status=ScheduledChangeStatus.PENDING).filter(at__lt=cutoff)


def _usage_hours(cutoff: datetime) -> QuerySet:
    return FlagUsage.objects.filter(hour__lt=cutoff)


def _silent_instances(cutoff: datetime) -> QuerySet:
    # An SDK process that restarted comes back with a new instance id: the old one stays silent.
    return SdkInstance.objects.filter(last_seen__lt=cutoff)


RULES = [
    Rule("finished scheduled flag changes", "FLAG_SCHEDULE_RETENTION_DAYS", _finished_schedules),
    Rule("flag usage hours", "FLAG_USAGE_RETENTION_DAYS", _usage_hours),
    Rule("silent SDK instances", "SDK_INSTANCE_RETENTION_DAYS", _silent_instances),
]
