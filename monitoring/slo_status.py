"""Where each SLO stands: its error budget left, its burn rates and which of the workbook's alerts fire.

The arithmetic is ``monitoring.slo``'s; this module feeds it the counts a service's scrape source stored
(``ServiceMinute``, ``ServiceHour``, read by ``window_counts``): for an availability objective a request is
good unless it failed (good = requests - errors); for a latency one it is good when served within the
threshold (good = requests at or under it, read from the latency histogram with ``Counters.under``).

A window with no successful scrape at all is a gap: its counts are None ("no data"), which neither
fires nor resolves an alert. A window whose scrapes succeeded but saw no request has counts of 0 and
burns nothing.

SLOs of a service whose source is a Prometheus server are not computed yet: that source stores only the
signal values it evaluates (``SignalSample``: error ratio, p95...), from which neither the good/total
counts of a 28-day window nor the share of requests under a threshold can be told. Their status says so
(``SloStatus.unsupported``), the SLO page shows it, and the burn-rate alerts skip them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.utils import timezone

from monitoring.models import (
    MetricSource,
    ObjectiveKind,
    Service,
    ServiceHour,
    ServiceLevelObjective,
    ServiceMinute,
    SourceKind,
)
from monitoring.rollup import Counters
from monitoring.service_signals import HOURLY_FROM, decode_buckets
from monitoring.slo import WORKBOOK_ALERTS, BurnRateAlert, Counts, Objective, Severity, budget_left, burn_rate

# The windows whose burn rates the page shows and the workbook's alerts read.
BURN_WINDOWS = (
    timedelta(minutes=5),
    timedelta(minutes=30),
    timedelta(hours=1),
    timedelta(hours=6),
    timedelta(days=3),
)
WINDOW_WORDS = {
    timedelta(minutes=5): "5 min",
    timedelta(minutes=30): "30 min",
    timedelta(hours=1): "1 h",
    timedelta(hours=6): "6 h",
    timedelta(days=3): "3 d",
}
PROMETHEUS_UNSUPPORTED = (
    "Not computed yet: this service's source is a Prometheus server, and the control plane keeps only the "
    "signal values it evaluates there, not the request counts an error budget needs."
)
NO_SOURCE = "The service has no enabled metric source."


def objective_of(slo: ServiceLevelObjective) -> Objective:
    return Objective(slo.target_percent / 100, timedelta(days=slo.window_days))


def slo_counts(slo: ServiceLevelObjective, counters: Counters | None) -> Counts | None:
    """Good and total requests of ``counters`` for this SLO; None for a gap (nothing was counted).

    A latency SLO reads its total from the histogram (its +Inf bucket) when there is one, so that good and
    total count the same observations; requests without a histogram cannot be judged (None).
    """
    if counters is None:
        return None
    if slo.kind == ObjectiveKind.LATENCY:
        if not counters.buckets:
            return Counts(0, 0) if not counters.requests else None
        total = counters.buckets.get(math.inf, counters.requests)
        under = counters.under((slo.threshold_ms or 0) / 1000) or 0.0
        return Counts(good=max(0.0, min(under, total)), total=max(total, 0.0))
    requests = max(counters.requests, 0.0)
    errors = min(max(counters.errors, 0.0), requests)
    return Counts(good=requests - errors, total=requests)


def _hour_edges(since: datetime, until: datetime) -> tuple[datetime, datetime]:
    first_hour = since.replace(minute=0, second=0, microsecond=0)
    if first_hour < since:
        first_hour += timedelta(hours=1)
    return first_hour, until.replace(minute=0, second=0, microsecond=0)


def _sum_window(service: Service, since: datetime, until: datetime, buckets: bool) -> Counters | None:
    """The rows ``window_counts`` reads for [since, until) (minutes under HOURLY_FROM, else whole hours and
    the minutes at both edges), summed in place rather than as a Counters per row: a 28-day window is
    hundreds of hourly rows per service. Buckets are decoded only when ``buckets`` (a latency SLO)."""
    minutes = ServiceMinute.objects.filter(service=service, route="", requests__isnull=False)
    fields = ("requests", "errors", "buckets") if buckets else ("requests", "errors")
    if until - since < HOURLY_FROM:
        rows = list(minutes.filter(minute__gte=since, minute__lt=until).values_list(*fields))
    else:
        first_hour, last_hour = _hour_edges(since, until)
        hours = ServiceHour.objects.filter(service=service, hour__gte=first_hour, hour__lt=last_hour)
        rows = list(hours.values_list(*fields))
        rows += minutes.filter(minute__gte=since, minute__lt=first_hour).values_list(*fields)
        rows += minutes.filter(minute__gte=last_hour, minute__lt=until).values_list(*fields)
    if not rows:
        return None
    requests = errors = 0.0
    summed: dict[str, float] = {}
    for row in rows:
        requests += row[0] or 0.0
        errors += row[1] or 0.0
        if buckets:
            for bound, count in row[2].items():
                summed[bound] = summed.get(bound, 0.0) + count
    return Counters(requests, errors, decode_buckets(summed))


class _Reader:
    """Window counts of services, read once per (service, window) however many SLOs ask; the buckets only
    for the services in ``latency`` (those with a latency SLO)."""

    def __init__(self, now: datetime, latency: set[int] | None = None) -> None:
        self.now = now
        self.latency = latency
        self._cache: dict[tuple[int, timedelta], Counters | None] = {}

    def counters(self, service: Service, window: timedelta) -> Counters | None:
        key = (service.pk, window)
        if key not in self._cache:
            buckets = self.latency is None or service.pk in self.latency
            self._cache[key] = _sum_window(service, self.now - window, self.now, buckets)
        return self._cache[key]


@dataclass(frozen=True)
class SloStatus:
    """One SLO now. ``counts`` is over its whole window; ``burn_rates`` per BURN_WINDOWS (None: no
    traffic or a gap); ``firing`` the workbook alerts whose two windows both burn too fast."""

    slo: ServiceLevelObjective
    objective: Objective
    counts: Counts | None = None
    budget_left: float | None = None
    burn_rates: dict[timedelta, float | None] = field(default_factory=dict)
    firing: tuple[BurnRateAlert, ...] = ()
    levels: dict[Severity, float | None] = field(default_factory=dict)
    unsupported: str = ""  # why it is not computed (a Prometheus source)
    note: str = ""  # what else the page should say (no source)

    @property
    def service(self) -> str:
        return self.slo.service.name

    @property
    def name(self) -> str:
        return self.slo.name

    @property
    def page_firing(self) -> bool:
        return any(alert.severity is Severity.PAGE for alert in self.firing)

    @property
    def ticket_firing(self) -> bool:
        return any(alert.severity is Severity.TICKET for alert in self.firing)

    @property
    def objective_words(self) -> str:
        target = f"{self.slo.target_percent:g} %"
        if self.slo.kind == ObjectiveKind.LATENCY:
            return f"{target} of requests within {self.slo.threshold_ms} ms"
        return f"{target} of requests succeed"

    @property
    def budget_state(self) -> str:
        """A status of the shared vocabulary (controlplane.status): pass, at_risk, failed, or "" for none."""
        left = self.budget_left
        if left is None:
            return ""
        if left < 0:
            return "failed"
        return "at_risk" if left < 0.25 else "pass"

    @property
    def budget_words(self) -> str:
        left = self.budget_left
        if self.unsupported:
            return "not computed"
        if left is None:
            return "no data"
        return "exhausted" if left < 0 else f"{left * 100:.1f} % left"

    @property
    def burn_rows(self) -> list[dict[str, object]]:
        """(window words, rate) for a table; the rate rounded for reading."""
        return [
            {"window": WINDOW_WORDS[window], "rate": None if rate is None else round(rate, 2)}
            for window, rate in self.burn_rates.items()
        ]

    def level(self, severity: Severity) -> float | None:
        return self.levels.get(severity)

    @property
    def level_page(self) -> float | None:
        return self.level(Severity.PAGE)

    @property
    def level_ticket(self) -> float | None:
        return self.level(Severity.TICKET)


def _level(
    alerts: Iterable[BurnRateAlert], objective: Objective, counts: Callable[[timedelta], Counts | None]
) -> float | None:
    """How far the alerts' conditions are from firing: the largest, over the alerts, of the smaller of the
    long and short windows' burn rates divided by the alert's factor. Above 1, the alert fires (both
    windows burn faster than its factor). None when every alert has a window with no data (a gap)."""
    found: list[float] = []
    for alert in alerts:
        long, short = counts(alert.long_window), counts(alert.short_window)
        if long is None or short is None:
            continue
        rates = [burn_rate(long, objective) or 0.0, burn_rate(short, objective) or 0.0]
        found.append(min(rates) / alert.factor)
    return max(found) if found else None


def _source(slo: ServiceLevelObjective) -> MetricSource | None:
    return next((s for s in slo.service.sources.all() if s.enabled), None)


def _is_prometheus(slo: ServiceLevelObjective) -> bool:
    source = _source(slo)
    return source is not None and source.kind == SourceKind.PROMETHEUS


def _status(slo: ServiceLevelObjective, reader: _Reader) -> SloStatus:
    objective = objective_of(slo)
    source = _source(slo)
    if source is not None and source.kind == SourceKind.PROMETHEUS:
        return SloStatus(slo, objective, burn_rates=dict.fromkeys(BURN_WINDOWS), unsupported=PROMETHEUS_UNSUPPORTED)

    def counts(window: timedelta) -> Counts | None:
        return slo_counts(slo, reader.counters(slo.service, window))

    window_total = counts(objective.window)
    rates = {}
    for window in BURN_WINDOWS:
        found = counts(window)
        rates[window] = None if found is None else burn_rate(found, objective)
    firing = tuple(
        alert
        for alert in WORKBOOK_ALERTS
        if (long := counts(alert.long_window)) is not None
        and (short := counts(alert.short_window)) is not None
        and alert.is_firing(long, short, objective)
    )
    levels = {
        severity: _level([a for a in WORKBOOK_ALERTS if a.severity is severity], objective, counts)
        for severity in Severity
    }
    return SloStatus(
        slo,
        objective,
        counts=window_total,
        budget_left=None if window_total is None else budget_left(window_total, objective),
        burn_rates=rates,
        firing=firing,
        levels=levels,
        note="" if source is not None else NO_SOURCE,
    )


def _objectives() -> list[ServiceLevelObjective]:
    return list(ServiceLevelObjective.objects.select_related("service").prefetch_related("service__sources"))


def _latency_services(slos: Iterable[ServiceLevelObjective]) -> set[int]:
    return {slo.service_id for slo in slos if slo.kind == ObjectiveKind.LATENCY}


def slo_statuses(now: datetime | None = None) -> list[SloStatus]:
    """Every SLO's status, by service and name (the SLO page's list)."""
    slos = _objectives()
    reader = _Reader(now or timezone.now(), _latency_services(slos))
    return [_status(slo, reader) for slo in slos]


def slo_status(service: str, name: str, now: datetime | None = None) -> SloStatus | None:
    """One SLO's status, or None when the service has no SLO of that name."""
    slo = (
        ServiceLevelObjective.objects.select_related("service")
        .prefetch_related("service__sources")
        .filter(service__name=service, name=name)
        .first()
    )
    return None if slo is None else _status(slo, _Reader(now or timezone.now()))


def slo_budgets(now: datetime | None = None) -> dict[str, float | None]:
    """Per service with an SLO: the smallest share of error budget left among its SLOs (1 untouched, 0
    spent, below 0 overspent), or None when none of them has data. What the dashboard's Services panel
    shows as "SLO budget left"."""
    slos = _objectives()
    reader = _Reader(now or timezone.now(), _latency_services(slos))
    budgets: dict[str, float | None] = {}
    for slo in slos:
        left: float | None = None
        if not _is_prometheus(slo):  # only the window's counts: no burn rates to read
            objective = objective_of(slo)
            counts = slo_counts(slo, reader.counters(slo.service, objective.window))
            left = None if counts is None else budget_left(counts, objective)
        known = [b for b in (budgets.get(slo.service.name), left) if b is not None]
        budgets[slo.service.name] = min(known) if known else None
    return budgets


def slo_burn_levels(severity: str, now: datetime | None = None) -> dict[tuple[str, str], float | None]:
    """For the slo_burn alert rule: per (service, SLO name) of the SLOs with alerting on, of enabled
    services with a scrape source, how far the workbook's ``severity`` ("page" or "ticket") alerts are
    from firing (above 1: firing; see ``_level``), None for no data."""
    wanted = [alert for alert in WORKBOOK_ALERTS if alert.severity is Severity(severity)]
    slos = [slo for slo in _objectives() if slo.alerting and slo.service.enabled and not _is_prometheus(slo)]
    reader = _Reader(now or timezone.now(), _latency_services(slos))
    levels: dict[tuple[str, str], float | None] = {}
    for slo in slos:
        # Only the severity's windows are read (a minute's evaluation reads no 28-day window).
        def counts(window: timedelta, slo: ServiceLevelObjective = slo) -> Counts | None:
            return slo_counts(slo, reader.counters(slo.service, window))

        levels[(slo.service.name, slo.name)] = _level(wanted, objective_of(slo), counts)
    return levels


# --- The burn over time ---------------------------------------------------------------------------


@dataclass(frozen=True)
class BudgetPoint:
    """The budget left at ``at`` over the SLO's window ending then (None: nothing counted in it)."""

    at: datetime
    budget_left: float | None
    bad: float
    total: float


def _step(window: timedelta) -> timedelta:
    """Hours between two points: about 168 points across the window (hourly up to 7 days)."""
    hours = max(1, math.ceil(window / timedelta(hours=1) / 168))
    return timedelta(hours=hours)


def budget_series(status: SloStatus, now: datetime | None = None) -> list[BudgetPoint]:
    """The budget left over the rolling window at points across the last window (hourly up to 7 days,
    coarser beyond): how the budget burned. Read in whole hours (the hourly rollups, the current hour
    from its minutes), so the last point may differ from ``status.budget_left`` by the minutes at the
    window's start edge. Empty for an SLO whose counts are not computed."""
    if status.unsupported:
        return []
    now = now or timezone.now()
    slo, objective = status.slo, status.objective
    window = objective.window
    current_hour = now.replace(minute=0, second=0, microsecond=0)
    first_hour = current_hour - 2 * window
    hours: dict[datetime, Counts] = {}
    for row in ServiceHour.objects.filter(service=slo.service, hour__gte=first_hour, hour__lt=current_hour):
        found = slo_counts(slo, Counters(row.requests, row.errors, decode_buckets(row.buckets)))
        if found is not None:
            hours[row.hour] = found
    tail: Counters | None = None
    for minute in ServiceMinute.objects.filter(service=slo.service, route="", minute__gte=current_hour, minute__lt=now):
        if minute.requests is None:
            continue
        counters = Counters(minute.requests, minute.errors or 0.0, decode_buckets(minute.buckets))
        tail = counters if tail is None else tail + counters
    current = slo_counts(slo, tail)
    if current is not None:
        hours[current_hour] = current
    # Prefix sums over every hour from first_hour to the current one (missing hours count nothing).
    span = int((current_hour - first_hour) / timedelta(hours=1)) + 1
    bad = [0.0] * (span + 1)
    total = [0.0] * (span + 1)
    for index in range(span):
        counts = hours.get(first_hour + timedelta(hours=index))
        bad[index + 1] = bad[index] + (counts.bad if counts else 0.0)
        total[index + 1] = total[index] + (counts.total if counts else 0.0)
    window_hours = int(window / timedelta(hours=1))
    step_hours = int(_step(window) / timedelta(hours=1))
    points: list[BudgetPoint] = []
    # Point i covers the hours (i - window_hours, i]; the last is the current hour, ending now.
    last = span - 1
    for index in reversed(range(last, last - window_hours, -step_hours)):
        start = max(0, index + 1 - window_hours)
        window_bad = bad[index + 1] - bad[start]
        window_total = total[index + 1] - total[start]
        at = now if index == last else first_hour + timedelta(hours=index + 1)
        left = 1 - (window_bad / window_total) / objective.error_budget if window_total else None
        points.append(BudgetPoint(at, left, window_bad, window_total))
    return points
