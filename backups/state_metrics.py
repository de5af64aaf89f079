"""The backups' gauges on ``/metrics`` (registered in ``backups/apps.py``): per enabled target, the age of
its latest successful backup and of its latest verified one, counted from the backup's start (its
recovery point); a target with none yet counts from its creation, as the backup-age alert rule does."""

from __future__ import annotations

from collections.abc import Iterator

from django.db.models import Max
from django.utils import timezone
from prometheus_client.core import GaugeMetricFamily, Metric


def backup_gauges() -> Iterator[Metric]:
    """Three queries whatever the number of targets: the targets, the latest success and the latest verified."""
    from backups.models import Backup, BackupTarget

    now = timezone.now()
    targets = dict(BackupTarget.objects.filter(enabled=True).values_list("name", "created_at"))
    enabled = Backup.objects.filter(target__enabled=True)
    succeeded = dict(
        enabled.succeeded().values("target__name").annotate(last=Max("started_at")).values_list("target__name", "last")
    )
    verified = dict(
        enabled.verified().values("target__name").annotate(last=Max("started_at")).values_list("target__name", "last")
    )
    success_age = GaugeMetricFamily(
        "controlplane_backup_last_success_age_seconds",
        "Seconds since the start of the target's latest successful backup (since the target's creation if none)",
        labels=["target"],
    )
    verified_age = GaugeMetricFamily(
        "controlplane_backup_last_verified_age_seconds",
        "Seconds since the start of the target's latest verified backup (since the target's creation if none)",
        labels=["target"],
    )
    for name in sorted(targets):
        created = targets[name]
        success_age.add_metric([name], (now - (succeeded.get(name) or created)).total_seconds())
        verified_age.add_metric([name], (now - (verified.get(name) or created)).total_seconds())
    yield success_age
    yield verified_age
