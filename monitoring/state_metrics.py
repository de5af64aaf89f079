"""Monitoring's gauges on ``/metrics`` (registered in ``monitoring/apps.py``): the health checks' latest
results, the heartbeats' ages, the job monitors' states, and the product's services: each service's
signals over the last 5 minutes (as the dashboard shows them) and each metric source's up.

A check's status is one number (1 pass, 0.5 warn, 0 fail), so that ``< 1`` charts and alerts on any
trouble; a job monitor's state has no order, so it is one series per state, 1 for the monitor's
current state and 0 for the others (``controlplane_job_monitor_state{monitor="nightly",state="down"} == 1``).

A service's signal with nothing to judge (no request in the window, no scrape) has no sample rather than
a 0: a quiet service is not an error-free one, and a gap in the chart says so.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta

from django.utils import timezone
from prometheus_client.core import GaugeMetricFamily, Metric

CHECK_VALUES = {"pass": 1.0, "warn": 0.5, "fail": 0.0}
# The scheduled checks run every minute or so; an older result is no longer the check's state.
CHECK_MAX_AGE = timedelta(hours=1)
# A service's "current" signals, the window the dashboard and the API's list show.
SERVICE_WINDOW = timedelta(minutes=5)


def monitoring_gauges() -> Iterator[Metric]:
    """A few queries: the checks' latest rows, the heartbeats, the job monitors, and the services (their
    sources and minutes in three, whatever their number)."""
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

    yield from service_gauges(now)


def service_gauges(now: datetime) -> Iterator[Metric]:
    """Each service's request rate, error ratio, p50/p95/p99 and up over the last 5 minutes; each metric
    source's up (1 its last scrape or query succeeded, 0 it failed; no sample before the first)."""
    from monitoring.models import MetricSource, Service
    from monitoring.service_signals import Signal, services_signals

    rate = GaugeMetricFamily(
        "controlplane_service_request_rate",
        "Requests per second the service answered over the last 5 minutes",
        labels=["service"],
    )
    errors = GaugeMetricFamily(
        "controlplane_service_error_ratio",
        "Share of the service's requests that failed over the last 5 minutes, 0 to 1",
        labels=["service"],
    )
    latency = GaugeMetricFamily(
        "controlplane_service_latency_seconds",
        "The service's request latency quantile over the last 5 minutes (0.5, 0.95, 0.99), from its histogram",
        labels=["service", "quantile"],
    )
    up = GaugeMetricFamily(
        "controlplane_service_up",
        "Share of the service's successful scrapes over the last 5 minutes (a Prometheus source: its up), 0 to 1",
        labels=["service"],
    )
    quantiles = {Signal.P50: "0.5", Signal.P95: "0.95", Signal.P99: "0.99"}
    services = list(Service.objects.filter(enabled=True).order_by("name"))
    for name, values in services_signals(services, SERVICE_WINDOW, now).items():
        for signal, found in values.items():
            if found.value is None:
                continue
            if signal is Signal.REQUEST_RATE:
                rate.add_metric([name], found.value)
            elif signal is Signal.ERROR_RATIO:
                errors.add_metric([name], found.value)
            elif signal is Signal.UP:
                up.add_metric([name], found.value)
            else:
                latency.add_metric([name, quantiles[signal]], found.value)
    yield rate
    yield errors
    yield latency
    yield up

    source_up = GaugeMetricFamily(
        "controlplane_service_source_up",
        "1 when the metric source's last scrape or query succeeded, 0 when it failed",
        labels=["service", "source", "kind"],
    )
    rows = MetricSource.objects.filter(enabled=True, service__enabled=True, up__isnull=False)
    for service, source_id, kind, is_up in rows.order_by("service__name", "id").values_list(
        "service__name", "id", "kind", "up"
    ):
        source_up.add_metric([service, str(source_id), kind], 1.0 if is_up else 0.0)
    yield source_up
