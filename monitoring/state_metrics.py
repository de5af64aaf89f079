"""Monitoring's gauges on ``/metrics`` (registered in ``monitoring/apps.py``): the health checks' latest
results, the heartbeats' ages, the job monitors' states, and the product's services: each service's
signals over the last 5 minutes (as the dashboard shows them) and each metric source's up.

A check's status is one number (1 pass, 0.5 warn, 0 fail), so that ``< 1`` charts and alerts on any
trouble; a job monitor's state has no order, so it is one series per state, 1 for the monitor's
current state and 0 for the others (``controlplane_job_monitor_state{monitor="nightly",state="down"} == 1``).

The SLOs' budgets and burn rates and the services' and monitored endpoints' uptime over 24 h, 7 d and
30 d are read from what beat's chart refresh keeps in the shared cache (``monitoring.dashboard``): a
scrape never reads a 28-day window nor asks a Prometheus server.

A service's signal with nothing to judge (no request in the window, no scrape) has no sample rather than
a 0: a quiet service is not an error-free one, and a gap in the chart says so.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

from django.core.cache import cache
from django.utils import timezone
from prometheus_client.core import GaugeMetricFamily, Metric

logger = logging.getLogger(__name__)

CHECK_VALUES = {"pass": 1.0, "warn": 0.5, "fail": 0.0}
# The scheduled checks run every minute or so; an older result is no longer the check's state.
CHECK_MAX_AGE = timedelta(hours=1)
# A service's "current" signals, the window the dashboard and the API's list show.
SERVICE_WINDOW = timedelta(minutes=5)


def monitoring_gauges() -> Iterator[Metric]:
    """A few queries: the checks' latest rows, the heartbeats, the job monitors, and the services (their
    sources and minutes in three, whatever their number)."""
    from monitoring.job_monitors import UNREADABLE_SINCE
    from monitoring.models import Heartbeat, JobMonitor, JobState
    from monitoring.selectors import latest_health

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
    # Not a periodic heartbeat: the job monitors' sweep keeps there when it found the ping buffer unreadable.
    beats = Heartbeat.objects.exclude(name=UNREADABLE_SINCE).order_by("name")
    for name, seen in beats.values_list("name", "last_seen"):
        heartbeat.add_metric([name], (now - seen).total_seconds())
    yield heartbeat

    jobs = GaugeMetricFamily(
        "controlplane_job_monitor_state",
        "1 for the job monitor's current state, 0 for the others",
        labels=["monitor", "state"],
    )
    last_ping = GaugeMetricFamily(
        "controlplane_job_monitor_last_ping_timestamp_seconds",
        "Unix time of the job monitor's last success or failure ping (no sample before the first)",
        labels=["monitor"],
    )
    last_duration = GaugeMetricFamily(
        "controlplane_job_monitor_last_duration_seconds",
        "Seconds between the job's last start ping and the success that followed it (no sample without one)",
        labels=["monitor"],
    )
    rows = JobMonitor.objects.order_by("name").values_list("name", "state", "last_ping", "last_duration")
    for name, current, pinged, duration in rows:
        for state in JobState.values:
            jobs.add_metric([name, state], 1 if state == current else 0)
        if pinged is not None:
            last_ping.add_metric([name], pinged.timestamp())
        if duration is not None:
            last_duration.add_metric([name], duration.total_seconds())
    yield jobs
    yield last_ping
    yield last_duration

    yield from service_gauges(now)
    yield from cached_gauges()


def _cached_charts() -> dict[str, Any] | None:
    """What beat's chart refresh last kept (``monitoring.dashboard.charts_refresh``), or None."""
    from monitoring.dashboard import CHART_CACHE_KEY

    try:
        stored = cache.get(CHART_CACHE_KEY)
    except Exception:  # noqa: BLE001 - the cache down: the families without samples, the scrape goes on
        logger.warning("/metrics: the dashboard's cached figures could not be read", exc_info=True)
        return None
    return stored if isinstance(stored, dict) else None


def cached_gauges() -> Iterator[Metric]:
    """The SLOs' budgets and burn rates and the uptime of services and monitored endpoints, as beat's chart
    refresh last computed them (once a minute; each reads days of rows or asks a Prometheus server): no
    query here. Without them in the cache (beat not run yet, the cache down or expired after 5 minutes),
    each family is described without samples."""
    stored = _cached_charts() or {}
    budget = GaugeMetricFamily(
        "controlplane_slo_budget_left_ratio",
        "Share of the SLO's error budget left over its window (1 untouched, 0 spent, below 0 overspent), "
        "as beat last computed it (at most a minute old)",
        labels=["service", "slo"],
    )
    burn = GaugeMetricFamily(
        "controlplane_slo_burn_rate",
        "How fast the SLO's error budget burns over the window (1: spent exactly at the window's end), "
        "as beat last computed it; no sample without requests in the window",
        labels=["service", "slo", "window"],
    )
    for figure in stored.get("slo_figures") or ():
        labels = [figure["service"], figure["slo"]]
        if figure["budget_left"] is not None:
            budget.add_metric(labels, figure["budget_left"])
        for window, rate in figure["burn"].items():
            if rate is not None:
                burn.add_metric([*labels, window], rate)
    yield budget
    yield burn

    service_uptime = GaugeMetricFamily(
        "controlplane_service_uptime_ratio",
        "Share of the service's successful scrapes over the window (24h, 7d, 30d), as beat last counted them",
        labels=["service", "window"],
    )
    endpoint_uptime = GaugeMetricFamily(
        "controlplane_endpoint_uptime_ratio",
        "Share of the monitored endpoint's successful probes over the window (24h, 7d, 30d), in the whole "
        "hours before beat's last count",
        labels=["endpoint", "window"],
    )
    for family, key in ((service_uptime, "service_uptime"), (endpoint_uptime, "endpoint_uptime")):
        for name, windows in sorted((stored.get(key) or {}).items()):
            for window, (good, total) in windows.items():
                if total:
                    family.add_metric([name, window], good / total)
    yield service_uptime
    yield endpoint_uptime


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
