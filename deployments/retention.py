"""The deployment tables retention prunes (registered in ``apps.py``; ``controlplane.retention`` runs them).

Only rows of finished deployments go: an active one's log and steps are still being written and read.
"""

from __future__ import annotations

from datetime import datetime

from django.db.models import QuerySet

from controlplane.retention import Rule
from deployments.models import FINISHED, LogLine, StepRun


def _deployment_logs(cutoff: datetime) -> QuerySet:
    return LogLine.objects.filter(time__lt=cutoff, deployment__status__in=FINISHED)


def _step_runs(cutoff: datetime) -> QuerySet:
    return StepRun.objects.filter(started_at__lt=cutoff, deployment__status__in=FINISHED)


# An analysis step's measurements (AnalysisMeasurement) go with their step run (on_delete CASCADE).
RULES = [
    Rule("deployment log lines", "DEPLOYMENT_LOG_RETENTION_DAYS", _deployment_logs),
    Rule("deployment step runs", "DEPLOYMENT_LOG_RETENTION_DAYS", _step_runs),
]
