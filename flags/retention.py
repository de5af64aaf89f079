"""The flags tables retention prunes (registered in ``apps.py``; ``controlplane.retention`` runs them)."""

from __future__ import annotations

from datetime import datetime

from django.db.models import QuerySet

from controlplane.retention import Rule
from flags.models import ScheduledChange, ScheduledChangeStatus


def _finished_schedules(cutoff: datetime) -> QuerySet:
    # Applied, skipped or cancelled changes due before the cutoff; pending ones always stay.
    return ScheduledChange.objects.exclude(status=ScheduledChangeStatus.PENDING).filter(at__lt=cutoff)


RULES = [Rule("finished scheduled flag changes", "FLAG_SCHEDULE_RETENTION_DAYS", _finished_schedules)]
