"""Monitoring's gauges on ``/metrics`` (registered in ``monitoring/apps.py``): the health checks' latest
results, the heartbeats' ages and the job monitors' states.

A check's status is one number (1 pass, 0.5 warn, 0 fail), so that ``< 1`` charts and alerts on any
trouble; a job monitor's state has no order, so it is one series per state, 1 for the monitor's
current state and 0 for the others (``controlplane_job_monitor_state{monitor="nightly",state="down"} == 1``).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

from django.utils import timezone
from prometheus_client.core import GaugeMetricFamily, Metric

CHECK_VALUES = {"pass": 1.0, "warn": 0.5, "fail": 0.0}
# The scheduled checks run every minute or so; an older result is no longer the check's state.
CHECK_MAX_AGE = timedelta(hours=1)


def monitoring_gauges() -> Iterator[Metric]:
    """Three queries: the checks' latest rows, the heartbeats, the job monitors."""
    from monitoring.models import Heartbeat, JobState
    from monitoring.selectors import job_monitor_states, latest_health

    now = timezone.now()
    status = GaugeMetricFamily(
        "controlplane_check_status",
        "The health check's latest stored result within the last hour: 1 pass, 0.5 warn, 0 fail",
        labels=["check", "measurement"],
    )
    age = GaugeMetricFamily(
        "controlplane_check_age_seconds",
        "Seconds since the health check's latest stored result",
        labels=["check", "measurement"],
    )
    for (component, measurement), row in sorted(latest_health(CHECK_MAX_AGE).items()):
        status.add_metric([component, measurement], CHECK_VALUES.get(row.status, 0.0))
        age.add_metric([component, measurement], (now - row.time).total_seconds())
    yield status
    yield age

    heartbeat = GaugeMetricFamily(
        "controlplane_heartbeat_age_seconds", "Seconds since the periodic heartbeat last ran", labels=["heartbeat"]
    )
    for name, seen in Heartbeat.objects.order_by("name").values_list("name", "last_seen"):
        heartbeat.add_metric([name], (now - seen).total_seconds())
    yield heartbeat

    jobs = GaugeMetricFamily(
        "controlplane_job_monitor_state",
        "1 for the job monitor's current state, 0 for the others",
        labels=["monitor", "state"],
    )
    for name, current in sorted(job_monitor_states().items()):
        for state in JobState.values:
            jobs.add_metric([name, state], 1 if state == current else 0)
    yield jobs
