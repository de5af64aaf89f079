"""The dashboard's Services panel: the product's services and scheduled jobs, read in a fixed number of
queries whatever the number of services and the rows they have stored.

Per service: up, request rate, error ratio and p95 over the last five minutes (through the bulk selector,
``monitoring.service_signals.services_signals``), a sparkline of its p95 per minute over the last hour,
its uptime over 24 h, 7 and 30 days (summed by the database) and its SLO's budget left. Then the job
monitors with their state, and the operators' monitored endpoints with their uptime.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from django.db.models import Count, Q
from django.utils import timezone

from controlplane.changes import Change, changes_between
from monitoring.models import (
    HealthMetric,
    JobMonitor,
    MetricSource,
    MonitoredEndpoint,
    Service,
    ServiceMinute,
    SignalSample,
    SourceKind,
)
from monitoring.rollup import histogram_quantile
from monitoring.service_signals import (
    UPTIME_WINDOWS,
    Signal,
    SignalValue,
    Uptime,
    decode_buckets,
    services_signals,
    services_uptime,
)

# What "now" means on the panel: long enough to hold several scrapes of a 15 s interval, short enough to
# show a failure within minutes (the alert rules' "for 5 minutes").
CURRENT = timedelta(minutes=5)
SPARK = timedelta(hours=1)
# The product's targets (the report's): p95 under 2 s, errors under 1 %.
P95_LIMIT_SECONDS = 2.0
ERROR_RATIO_LIMIT = 0.01
SPARK_WIDTH, SPARK_HEIGHT = 120, 24
WINDOW_WORDS = {"24h": "24 h", "7d": "7 d", "30d": "30 d"}


def _number(value: float) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".")


def percent(ratio: float | None) -> str:
    """0.99953 -> "99.95 %"; the digits an uptime needs (99.9 and 99.99 must not both read "100 %")."""
    if ratio is None:
        return "–"
    if ratio >= 1:
        return "100 %"
    shown = f"{ratio * 100:.3f}".rstrip("0").rstrip(".")
    return f"{shown} %"


@dataclass
class UptimeCell:
    window: str
    uptime: Uptime

    @property
    def words(self) -> str:
        return WINDOW_WORDS[self.window]

    @property
    def text(self) -> str:
        return percent(self.uptime.ratio)

    @property
    def title(self) -> str:
        if not self.uptime.total:
            return f"nothing measured in the last {self.words}"
        return f"{self.uptime.good} of {self.uptime.total} succeeded in the last {self.words}"


@dataclass
class ServiceRow:
    name: str
    description: str
    signals: Mapping[Signal, SignalValue]
    points: list[tuple[datetime, float | None]] = field(default_factory=list)  # p95 in seconds per minute
    uptime: Mapping[str, Uptime] = field(default_factory=dict)
    slo: str = "no SLO"
    slo_status: str = ""  # a status pill's value for the budget; "" shows words only
    changes: Sequence[Change] = ()  # the last hour's (controlplane.changes), oldest first

    @property
    def markers(self) -> list[dict[str, Any]]:
        """A line per change of the hour across the sparkline, what, who and when in its ``<title>``."""
        if not self.points:
            return []
        start = self.points[0][0]
        # The current minute is after the line's last point: a change in it is drawn at the right edge.
        return [
            change.marker(min(1.0, (change.time - start) / SPARK) * SPARK_WIDTH, hit=2) for change in self.shown_changes
        ]

    @property
    def shown_changes(self) -> list[Change]:
        """The changes within the sparkline's hour (drawn, and said in text beside it)."""
        if not self.points:
            return []
        start = self.points[0][0]
        return [c for c in self.changes if c.time >= start]  # the panel's read kept only the last hour's

    def _value(self, signal: Signal) -> float | None:
        return self.signals[signal].value

    @property
    def up(self) -> float | None:
        return self._value(Signal.UP)

    @property
    def request_rate(self) -> float | None:
        return self._value(Signal.REQUEST_RATE)

    @property
    def error_ratio(self) -> float | None:
        return self._value(Signal.ERROR_RATIO)

    @property
    def p95(self) -> float | None:
        return self._value(Signal.P95)

    @property
    def error(self) -> str:
        return next((value.error for value in self.signals.values() if value.error), "")

    @property
    def status(self) -> str:
        """A status pill's value: up, down (no scrape succeeded), warn (some failed), waiting (none ran)."""
        if self.up is None:
            return "waiting"
        if self.up == 0:
            return "down"
        return "up" if self.up >= 1 else "warn"

    @property
    def status_words(self) -> str:
        if self.up is None:
            return "no data"
        if 0 < self.up < 1:
            return f"up {percent(self.up)}"
        return "up" if self.up else "down"

    @property
    def too_slow(self) -> bool:
        return self.p95 is not None and self.p95 > P95_LIMIT_SECONDS

    @property
    def too_many_errors(self) -> bool:
        return self.error_ratio is not None and self.error_ratio > ERROR_RATIO_LIMIT

    @property
    def rate_text(self) -> str:
        rate = self.request_rate
        return "–" if rate is None else f"{_number(round(rate, 2))} req/s"

    @property
    def error_text(self) -> str:
        return percent(self.error_ratio) if self.error_ratio is not None else "–"

    @property
    def p95_text(self) -> str:
        if self.p95 is None:
            return "–"
        if self.p95 < 1:
            return f"{_number(round(self.p95 * 1000))} ms"
        return f"{_number(round(self.p95, 2))} s"

    @property
    def uptime_cells(self) -> list[UptimeCell]:
        return [UptimeCell(window, self.uptime.get(window, Uptime(0, 0))) for window in UPTIME_WINDOWS]

    @property
    def sparkline(self) -> str:
        """An SVG path (120 x 24) of the p95 per minute over the hour; a minute without requests (or a
        failed scrape) breaks the line rather than drawing it down to zero."""
        values = [v for _, v in self.points if v is not None]
        if not values:
            return ""
        low, high = min(values), max(values)
        span = (high - low) or 1.0
        start = self.points[0][0] if self.points else None
        parts: list[str] = []
        pen_down = False
        for moment, value in self.points:
            if value is None:
                pen_down = False
                continue
            share = (moment - start) / SPARK if start is not None else 0.0
            x = max(0.0, min(1.0, share)) * SPARK_WIDTH
            y = SPARK_HEIGHT - 2 - (value - low) / span * (SPARK_HEIGHT - 4)
            parts.append(f"{'L' if pen_down else 'M'}{x:.1f},{y:.1f}")
            pen_down = True
        if len(values) == 1:  # a lone minute: a short dash so it shows
            parts.append("h2")
        return " ".join(parts)

    @property
    def sparkline_range(self) -> str:
        values = [v for _, v in self.points if v is not None]
        if not values:
            return ""
        gaps = sum(1 for _, v in self.points if v is None)
        gap_words = f", {gaps} minute{'s' if gaps != 1 else ''} without data" if gaps else ""
        low, high = min(values), max(values)
        return f"p95 per minute from {_number(round(low * 1000))} to {_number(round(high * 1000))} ms{gap_words}"


@dataclass
class EndpointRow:
    name: str
    uptime: Mapping[str, Uptime]

    @property
    def uptime_cells(self) -> list[UptimeCell]:
        return [UptimeCell(window, self.uptime.get(window, Uptime(0, 0))) for window in UPTIME_WINDOWS]


@dataclass
class ServicesPanel:
    services: list[ServiceRow]
    jobs: list[JobMonitor]
    endpoints: list[EndpointRow]

    @property
    def empty(self) -> bool:
        return not self.services and not self.jobs


def _minute_points(services: Sequence[Service], now: datetime) -> dict[int, list[tuple[datetime, float | None]]]:
    """Each service's p95 per minute over the last hour (one query); a minute absent or with no
    successful scrape is None."""
    if not services:
        return {}
    since = (now - SPARK).replace(second=0, microsecond=0)
    rows = (
        ServiceMinute.objects.filter(service__in=services, route="", minute__gte=since, minute__lt=now)
        .order_by("service_id", "minute")
        .values_list("service_id", "minute", "requests", "buckets")
    )
    found: dict[int, dict[datetime, float | None]] = defaultdict(dict)
    for service_id, minute, requests, buckets in rows:
        found[service_id][minute] = histogram_quantile(0.95, decode_buckets(buckets)) if requests else None
    minutes = [since + timedelta(minutes=m) for m in range(int(SPARK.total_seconds() // 60))]
    return {service.pk: [(m, found[service.pk].get(m)) for m in minutes] for service in services}


def _sample_points(services: Sequence[Service], now: datetime) -> dict[int, list[tuple[datetime, float | None]]]:
    """A Prometheus source's stored p95 over the last hour (one query, only when there are such services)."""
    found: dict[int, list[tuple[datetime, float | None]]] = defaultdict(list)
    if not services:
        return found
    rows = (
        SignalSample.objects.filter(service__in=services, signal=Signal.P95.value, at__gte=now - SPARK, at__lte=now)
        .order_by("service_id", "at")
        .values_list("service_id", "at", "value")
    )
    for service_id, at, value in rows:
        found[service_id].append((at, value))
    return found


def endpoint_counts(
    names: Sequence[str], since: Mapping[str, datetime], until: datetime
) -> dict[str, dict[str, Uptime]]:
    """Probes of the monitored endpoints that did not fail, per window, summed by the database in one
    query (the index on component, measurement and time serves it)."""
    if not names:
        return {}
    earliest = min(since.values())
    sums: dict[str, Any] = {}
    for window, begins in since.items():
        sums[f"{window}_total"] = Count("id", filter=Q(time__gte=begins))
        sums[f"{window}_good"] = Count("id", filter=Q(time__gte=begins) & ~Q(status="fail"))
    rows = (
        HealthMetric.objects.filter(
            component__in=[f"endpoint:{name}" for name in names],
            measurement="responseTime",
            time__gte=earliest,
            time__lt=until,
        )
        .values("component")
        .annotate(**sums)
        .order_by()
    )
    return {
        row["component"].removeprefix("endpoint:"): {
            window: Uptime(row[f"{window}_good"], row[f"{window}_total"]) for window in since
        }
        for row in cast(Iterable[Mapping[str, Any]], rows)  # the stubs know only the names written out
    }


def budget_words(left: float | None) -> tuple[str, str]:
    """An SLO budget left (1 untouched, below 0 overspent) in words, with a status pill's value."""
    if left is None:
        return "no data", "waiting"
    if left < 0:
        return "exhausted", "failed"
    return f"{left * 100:.1f} % left", "at_risk" if left < 0.25 else "pass"


def _prometheus_services(services: Sequence[Service]) -> set[int]:
    """The services whose first enabled source is a Prometheus server (one query)."""
    first: dict[int, str] = {}
    rows = MetricSource.objects.filter(service__in=services, enabled=True).order_by("service_id", "id")
    for service_id, kind in rows.values_list("service_id", "kind"):
        first.setdefault(service_id, kind)
    return {pk for pk, kind in first.items() if kind == SourceKind.PROMETHEUS}


def endpoint_names() -> list[str]:
    return list(MonitoredEndpoint.objects.filter(enabled=True).order_by("name").values_list("name", flat=True))


def read(
    now: datetime | None = None,
    endpoint_uptime: Callable[[Sequence[str], datetime], Mapping[str, Mapping[str, Uptime]]] | None = None,
    budgets: Mapping[str, float | None] | None = None,
    changes: Sequence[Change] | None = None,
) -> ServicesPanel:
    """The panel at ``now``. ``endpoint_uptime(names, now)`` gives the endpoints' uptime per window and
    ``budgets`` each service's smallest SLO budget left (the dashboard keeps both in its cache, which
    beat refreshes every minute: each reads days of rows); read here when not given, as are ``changes``
    (the page reads a week of them once for all its charts)."""
    now = now or timezone.now()
    services = list(Service.objects.filter(enabled=True))
    signals = services_signals(services, CURRENT, now) if services else {}
    uptime = services_uptime(services, now) if services else {}
    prometheus = _prometheus_services(services) if services else set()
    points = _minute_points([s for s in services if s.pk not in prometheus], now)
    points.update(_sample_points([s for s in services if s.pk in prometheus], now))
    if budgets is None:
        from monitoring.slo_status import slo_budgets

        budgets = slo_budgets(now)
    hour_changes: Sequence[Change] = ()
    if services:  # the sparklines' markers: every service shows the same changes (none is per service yet)
        since = now - SPARK
        hour_changes = (
            changes_between(since, now + timedelta(seconds=1))
            if changes is None
            else [c for c in changes if since <= c.time <= now]
        )
    rows = [
        ServiceRow(
            name=service.name,
            description=service.description,
            signals=signals[service.name],
            points=points.get(service.pk, []),
            uptime=uptime.get(service.pk, {}),
            slo=budget_words(budgets[service.name])[0] if service.name in budgets else "no SLO",
            slo_status=budget_words(budgets[service.name])[1] if service.name in budgets else "",
            changes=hour_changes,
        )
        for service in services
    ]
    jobs = list(JobMonitor.objects.order_by("name"))
    names = endpoint_names()
    found: Mapping[str, Mapping[str, Uptime]]
    if endpoint_uptime is None:
        found = endpoint_counts(names, {w: now - span for w, span in UPTIME_WINDOWS.items()}, now)
    else:
        found = endpoint_uptime(names, now)
    endpoints = [EndpointRow(name, found.get(name, {})) for name in names]
    return ServicesPanel(rows, jobs, endpoints)
