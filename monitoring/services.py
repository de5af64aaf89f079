"""Writes of the monitoring app that are not operator changes: heartbeats, stored metrics, pruning."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from monitoring.models import HealthMetric, Heartbeat
from monitoring.signals import checks_recorded

if TYPE_CHECKING:
    from monitoring.checks import Result

# Heartbeat rows besides beat's ("celery"): one per worker, and the time the scheduled checks last ran.
WORKER_PREFIX = "worker:"
CHECKS_RUN = "scheduled-checks"
SCHEDULED_DEADLINE_SECONDS = 45.0  # under the scheduled task's soft time limit


def heartbeat_record(*, name: str, hostname: str) -> Heartbeat:
    """Store that ``name`` is alive now (an upsert: one row per name)."""
    heartbeat, _ = Heartbeat.objects.update_or_create(
        name=name, defaults={"last_seen": timezone.now(), "hostname": hostname[:255]}
    )
    return heartbeat


def beat_started_record(*, hostname: str) -> None:
    """Beat's first start on this database counts as its first heartbeat, so that checks run before the
    first ``heartbeat`` task (a fresh install) do not report beat missing. Never moved afterwards: a
    beat that keeps crashing at start must not look alive."""
    Heartbeat.objects.get_or_create(name="celery", defaults={"last_seen": timezone.now(), "hostname": hostname[:255]})


def worker_heartbeat_name(nodename: str) -> str:
    # A node name ("celery@host") may be longer than the name column: a digest keeps it unique.
    return WORKER_PREFIX + hashlib.sha256(nodename.encode()).hexdigest()[:24]


def worker_heartbeat_record(*, nodename: str) -> Heartbeat:
    """A worker's own timer: this worker is alive now. Rows of workers gone for a day are removed."""
    now = timezone.now()
    Heartbeat.objects.filter(name__startswith=WORKER_PREFIX, last_seen__lt=now - timedelta(days=1)).delete()
    return heartbeat_record(name=worker_heartbeat_name(nodename), hostname=nodename)


def worker_heartbeat_delete(*, nodename: str) -> None:
    """A worker stopping on purpose: the workers check counts it gone at once, not after its limit."""
    Heartbeat.objects.filter(name=worker_heartbeat_name(nodename)).delete()


def checks_run_claim(*, min_gap_seconds: float) -> bool:
    """Claim this run of the scheduled checks: True unless they ran less than ``min_gap_seconds`` ago.

    Beat's task and the stand-ins for a silent beat (a worker's timer, a web process) all claim first,
    with a conditional UPDATE, so that two of them never store and evaluate the same minute twice.
    """
    now = timezone.now()
    claimed = Heartbeat.objects.filter(name=CHECKS_RUN, last_seen__lte=now - timedelta(seconds=min_gap_seconds)).update(
        last_seen=now
    )
    if claimed:
        return True
    try:
        with transaction.atomic():
            Heartbeat.objects.create(name=CHECKS_RUN, last_seen=now, hostname="")
    except IntegrityError:  # the row exists and is recent, or another process created it just now
        return False
    return True


def scheduled_checks_run(*, min_gap_seconds: float) -> list[HealthMetric] | None:
    """Run every check, store one row per measurement, then tell alerting (``checks_recorded``); None
    when the checks ran less than ``min_gap_seconds`` ago (someone else has this minute)."""
    from monitoring.checks import COMPREHENSIVE, registered_checks, run_checks

    if not checks_run_claim(min_gap_seconds=min_gap_seconds):
        return None
    checks = registered_checks(COMPREHENSIVE)
    # Not a probe that someone waits for: each endpoint gets its own timeout, within the task's limit.
    longest = max((c.timeout_seconds for c in checks if c.timeout_seconds is not None), default=0.0)
    deadline = min(SCHEDULED_DEADLINE_SECONDS, max(settings.HEALTH_DEADLINE, longest + 0.5))
    rows = health_metrics_record(results=run_checks(checks, deadline_seconds=deadline))
    # Alerting listens and evaluates its rules right after the rows it reads are stored; a separate
    # schedule would count a minute twice.
    checks_recorded.send(sender=scheduled_checks_run, rows=rows)
    return rows


def health_metrics_record(*, results: list[Result]) -> list[HealthMetric]:
    """One row per measurement, all written together."""
    rows = [
        HealthMetric(
            time=r.time,
            component=r.component[:100],
            measurement=r.measurement[:50],
            component_type=r.component_type[:30],
            value=r.value,
            unit=r.unit[:20],
            status=r.status,
            output=r.output[:500],
        )
        for r in results
    ]
    with transaction.atomic():
        return HealthMetric.objects.bulk_create(rows)
