"""The backups tables retention prunes (registered in ``apps.py``; ``controlplane.retention`` runs them).

Backups themselves follow each target's own rules (``services.backups_prune``). Drills go by age, but
never a running one, nor a plan's newest passed drill (readiness and the RTO achieved read it).
"""

from __future__ import annotations

from datetime import datetime

from django.db.models import Max, QuerySet

from backups.models import Drill, DrillStatus
from controlplane.retention import Rule


def _drills(cutoff: datetime) -> QuerySet:
    newest_passed = (
        Drill.objects.filter(status=DrillStatus.PASSED).values("plan").annotate(newest=Max("id")).values("newest")
    )
    return Drill.objects.filter(started_at__lt=cutoff).exclude(status=DrillStatus.RUNNING).exclude(pk__in=newest_passed)


RULES = [Rule("restore drills", "BACKUP_DRILL_RETENTION_DAYS", _drills)]
