"""Reads of monitoring data for the APIs, the dashboard and alert evaluation."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Sum
from django.utils import timezone

from monitoring.models import BUCKET_FIELDS, LATENCY_BUCKETS_MS, HealthMetric, JobMonitor, RequestRollup, Service

# A service's golden signals: the one way the dashboard, alert rules, API and deploy analysis ask.
from monitoring.service_signals import (
    Signal,
    SignalValue,
    UnknownService,
    WindowCounts,
    service_signal,
    service_signals,
    signal_from_counts,
    stored_counts,
    window_counts,
)

# SLOs: budget left, burn rates and the workbook's alerts (the SLO page, the dashboard, the slo_burn rule).
from monitoring.slo_status import (
    SloBurn,
    SloStatus,
    budget_series,
    slo_budgets,
    slo_burn_levels,
    slo_status,
    slo_statuses,
    slo_window_burn,
)


@dataclass(frozen=True)
class RequestFigures:
    count: int
    errors: int
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    db_ms_avg: float | None
    minutes: float

    @property
    def error_rate(self) -> float | None:
        """Share of requests answered 5xx, 0..1 (None without requests)."""
        return self.errors / self.count if self.count else None

    @property
    def throughput_per_minute(self) -> float:
        return self.count / self.minutes if self.minutes else 0.0

    def as_dict(self) -> dict[str, float | int | None]:
        return {
            "count": self.count,
            "errors": self.errors,
            "error_rate": self.error_rate,
            "throughput_per_minute": round(self.throughput_per_minute, 3),
            "p50_ms": self.p50_ms,
            "p95_ms": self.p95_ms,
            "p99_ms": self.p99_ms,
            "db_ms_avg": self.db_ms_avg,
        }


def percentile_from_buckets(buckets: list[int], quantile: float) -> float | None:
    """The quantile (0..1) of a fixed-bucket histogram, interpolated linearly inside its bucket."""
    total = sum(buckets)
    if not total:
        return None
    rank = quantile * total
    seen = 0
    lower = 0.0
    for index, count in enumerate(buckets):
        upper = LATENCY_BUCKETS_MS[index] if index < len(LATENCY_BUCKETS_MS) else None
        if count and seen + count >= rank:
            if upper is None:  # the open top bucket: all we know is "above the last bound"
                return float(LATENCY_BUCKETS_MS[-1])
            return round(lower + (upper - lower) * (rank - seen) / count, 2)
        seen += count
        lower = float(upper) if upper is not None else lower
    return float(LATENCY_BUCKETS_MS[-1])


def _figures(rows: Mapping[str, Any], minutes: float) -> RequestFigures:
    buckets = [rows.get(field) or 0 for field in BUCKET_FIELDS]
    count = rows.get("count") or 0
    return RequestFigures(
        count=count,
        errors=rows.get("errors") or 0,
        p50_ms=percentile_from_buckets(buckets, 0.50),
        p95_ms=percentile_from_buckets(buckets, 0.95),
        p99_ms=percentile_from_buckets(buckets, 0.99),
        db_ms_avg=round((rows.get("db_ms_sum") or 0) / count, 3) if count else None,
        minutes=minutes,
    )


_SUMS = {field: Sum(field) for field in ("count", "errors", "db_ms_sum", *BUCKET_FIELDS)}


# The control plane's own probes (the load balancer's, the detailed health reports a monitor polls, and
# Prometheus scraping /metrics): counted and shown per view, but left out of the overall figures (and so
# of the latency and error-rate alerts), which are about the requests people and services make. A
# health report answers 503 while a check fails and may take its whole deadline: counting it would turn
# one failing check into an error-rate and a latency alert as well.
PROBE_VIEWS = ("health-live", "health-ready", "api-health-enhanced", "api-health-comprehensive", "metrics")


def request_figures(since: datetime, until: datetime | None = None) -> RequestFigures:
    """p50/p95/p99, error rate, throughput and database time of all requests in [since, until), the
    health probes left out."""
    until = until or timezone.now()
    rows = (
        RequestRollup.objects.filter(minute__gte=since, minute__lt=until)
        .exclude(view__in=PROBE_VIEWS)
        .aggregate(**_SUMS)
    )
    return _figures(rows, (until - since).total_seconds() / 60)


def request_figures_by_view(since: datetime, until: datetime | None = None) -> dict[str, RequestFigures]:
    until = until or timezone.now()
    minutes = (until - since).total_seconds() / 60
    rows = RequestRollup.objects.filter(minute__gte=since, minute__lt=until).values("view").annotate(**_SUMS)
    return {row["view"]: _figures(row, minutes) for row in rows.order_by("view")}


def latest_health(max_age: timedelta = timedelta(hours=1)) -> dict[tuple[str, str], HealthMetric]:
    """The newest stored row per (component, measurement) within ``max_age``."""
    since = timezone.now() - max_age
    latest: dict[tuple[str, str], HealthMetric] = {}
    for row in HealthMetric.objects.filter(time__gte=since).order_by("component", "measurement", "-time"):
        latest.setdefault((row.component, row.measurement), row)
    return latest


def recent_statuses(component: str, measurement: str, limit: int) -> list[str]:
    """The last ``limit`` stored statuses of one check, newest first."""
    return list(
        HealthMetric.objects.filter(component=component, measurement=measurement)
        .order_by("-time")
        .values_list("status", flat=True)[:limit]
    )


def service_names() -> list[str]:
    """Every service's name, enabled or not (alert rules name theirs; a disabled one just reads no data)."""
    return list(Service.objects.order_by("name").values_list("name", flat=True))


def job_monitor_states() -> dict[str, str]:
    """Every job monitor's state by name (the job-down alert rule reads it)."""
    return dict(JobMonitor.objects.values_list("name", "state"))


__all__ = [
    "PROBE_VIEWS",
    "RequestFigures",
    "Signal",
    "SignalValue",
    "SloBurn",
    "SloStatus",
    "UnknownService",
    "WindowCounts",
    "budget_series",
    "job_monitor_states",
    "latest_health",
    "percentile_from_buckets",
    "recent_statuses",
    "request_figures",
    "request_figures_by_view",
    "service_names",
    "service_signal",
    "service_signals",
    "signal_from_counts",
    "slo_budgets",
    "slo_burn_levels",
    "slo_status",
    "slo_statuses",
    "slo_window_burn",
    "stored_counts",
    "window_counts",
]
