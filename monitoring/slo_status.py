"""Where each SLO stands: its error budget left, its burn rates and which of the workbook's alerts fire.

The arithmetic is ``monitoring.slo``'s; this module feeds it good and total counts over each window: for
an availability objective a request is good unless it failed (good = requests - errors); for a latency
one it is good when served within the threshold (good = requests at or under it, read from the latency
histogram with ``Counters.under``: exact on a bucket bound, interpolated linearly between the two bounds
around a threshold that is not one, as Prometheus' ``histogram_quantile`` does).

Where the counts come from depends on the service's source:

- ``scrape``: the rollups the worker stored (``ServiceMinute``, ``ServiceHour``, read as ``window_counts``
  reads them). A window with no successful scrape at all is a gap: its counts are None ("no data").
- ``prometheus``: the source's server, asked for each window (``promql.window_counters``):
  ``sum(increase(<requests>{sel}[w]))`` and its error-status variant, or for a latency objective
  ``sum by (le) (increase(<histogram>_bucket{sel}[w]))`` - every bucket with the bounds the server has, in
  one query, from which the share under the threshold is read as for a scrape source. The source's
  overrides of ``requests``, ``errors`` and ``buckets`` apply. An SLO's queries share the source's timeout
  (at most PROMETHEUS_TIMEOUT_CAP); a server that does not answer stops the rest, and any failure makes
  the whole SLO "no data" with the error in words (``SloStatus.error``), which neither fires nor resolves
  an alert. The SLO pages and the alert rules ask the server when they run; the dashboard's Services
  panel never does: ``slo_budgets`` reads the budgets beat's chart refresh last evaluated.

A window whose source answered but counted no request has counts of 0 and burns nothing.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.core.cache import cache
from django.utils import timezone

from monitoring import promql
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

logger = logging.getLogger(__name__)

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
# The longest a Prometheus SLO's queries may take together (its source's timeout, if shorter): the two
# slo_burn rules and the chart refresh each run in a task with a 50 s limit.
PROMETHEUS_TIMEOUT_CAP = 15.0
# The Prometheus SLOs' budgets as beat's chart refresh last evaluated them, for the dashboard.
PROMETHEUS_BUDGETS_KEY = "monitoring:slo:prometheus-budgets:v1"
PROMETHEUS_BUDGETS_SECONDS = 300  # beat refreshes every minute; a stopped beat shows "no data" after 5 min
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
    error: str = ""  # why there are no counts: the Prometheus server's failure in words
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


@dataclass(frozen=True)
class _Asked:
    """What a Prometheus server counted for one SLO, per window asked; or why it could not tell."""

    counters: dict[timedelta, Counters | None] = field(default_factory=dict)
    error: str = ""


def _timeout(source: MetricSource) -> float:
    return min(float(source.timeout_seconds), PROMETHEUS_TIMEOUT_CAP)


def _ask_prometheus(
    slos: Iterable[ServiceLevelObjective],
    windows: Callable[[ServiceLevelObjective], Iterable[timedelta]],
    now: datetime,
) -> dict[int, _Asked]:
    """Per SLO (by pk) whose source is a Prometheus server: its counts over each of ``windows(slo)``.

    Each SLO's queries share its source's timeout (capped); a window asked by two SLOs of a service is
    asked once; a server that did not answer is not asked again for the service's other SLOs. The servers
    are asked at once (a thread per source, touching no database), so a hung one costs its own timeout."""
    groups: dict[int, list[tuple[MetricSource, ServiceLevelObjective]]] = defaultdict(list)
    for slo in slos:
        source = _source(slo)
        if source is not None and source.kind == SourceKind.PROMETHEUS:
            groups[source.pk].append((source, slo))

    def ask(group: list[tuple[MetricSource, ServiceLevelObjective]]) -> list[tuple[int, _Asked]]:
        asked: dict[tuple[bool, timedelta], Counters | None] = {}
        unreachable = ""
        found: list[tuple[int, _Asked]] = []
        for source, slo in group:
            if unreachable:
                found.append((slo.pk, _Asked(error=unreachable)))
                continue
            evaluation = promql.Evaluation(source, _timeout(source))
            latency = slo.kind == ObjectiveKind.LATENCY
            counters: dict[timedelta, Counters | None] = {}
            try:
                for window in windows(slo):
                    if (latency, window) not in asked:
                        asked[(latency, window)] = promql.window_counters(evaluation, window, now, buckets=latency)
                    counters[window] = asked[(latency, window)]
            except promql.QueryFailed as error:
                if isinstance(error, promql.SourceUnreachable):
                    unreachable = str(error)
                logger.warning("SLO %s/%s: its Prometheus server failed: %s", slo.service.name, slo.name, error)
                found.append((slo.pk, _Asked(error=str(error))))
            except Exception as error:  # one SLO's surprise must not cost the others (or the page) theirs
                logger.exception("SLO %s/%s: asking its Prometheus server failed", slo.service.name, slo.name)
                found.append((slo.pk, _Asked(error=f"the evaluation failed ({type(error).__name__})")))
            else:
                found.append((slo.pk, _Asked(counters)))
        return found

    if not groups:
        return {}
    if len(groups) == 1:
        return dict(ask(next(iter(groups.values()))))
    with ThreadPoolExecutor(max_workers=min(8, len(groups)), thread_name_prefix="promql-slo") as pool:
        return {pk: asked for found in pool.map(ask, groups.values()) for pk, asked in found}


def _all_windows(slo: ServiceLevelObjective) -> tuple[timedelta, ...]:
    return (objective_of(slo).window, *BURN_WINDOWS)


def _status(slo: ServiceLevelObjective, reader: _Reader, asked: _Asked | None = None) -> SloStatus:
    """The SLO's status from ``asked`` (its Prometheus server's counts) or else from ``reader``."""
    objective = objective_of(slo)
    source = _source(slo)
    if asked is not None and asked.error:
        return SloStatus(slo, objective, burn_rates=dict.fromkeys(BURN_WINDOWS), error=asked.error)

    def counts(window: timedelta) -> Counts | None:
        if asked is not None:
            return slo_counts(slo, asked.counters.get(window))
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
    """Every SLO's status, by service and name (the SLO page's list). Asks the Prometheus servers of the
    SLOs whose source is one (at once, each within its source's timeout)."""
    now = now or timezone.now()
    slos = _objectives()
    asked = _ask_prometheus(slos, _all_windows, now)
    reader = _Reader(now, _latency_services(slo for slo in slos if slo.pk not in asked))
    return [_status(slo, reader, asked.get(slo.pk)) for slo in slos]


def slo_status(service: str, name: str, now: datetime | None = None) -> SloStatus | None:
    """One SLO's status, or None when the service has no SLO of that name."""
    now = now or timezone.now()
    slo = (
        ServiceLevelObjective.objects.select_related("service")
        .prefetch_related("service__sources")
        .filter(service__name=service, name=name)
        .first()
    )
    if slo is None:
        return None
    return _status(slo, _Reader(now), _ask_prometheus([slo], _all_windows, now).get(slo.pk))


@dataclass(frozen=True)
class SloBurn:
    """One SLO's burn rate over one window (a deploy analysis' condition): None with ``total`` 0 or None
    when the window counted nothing to judge; ``error`` says why a Prometheus server could not tell."""

    burn_rate: float | None
    total: float | None
    error: str = ""


def slo_window_burn(service: str, name: str, window: timedelta, now: datetime | None = None) -> SloBurn | None:
    """The burn rate of one SLO over the ``window`` ending at ``now`` (read as ``slo_status`` reads its
    windows); None when the service has no SLO of that name."""
    now = now or timezone.now()
    slo = (
        ServiceLevelObjective.objects.select_related("service")
        .prefetch_related("service__sources")
        .filter(service__name=service, name=name)
        .first()
    )
    if slo is None:
        return None
    asked = _ask_prometheus([slo], lambda _slo: (window,), now).get(slo.pk)
    if asked is not None and asked.error:
        return SloBurn(None, None, asked.error)
    counters = asked.counters.get(window) if asked is not None else _Reader(now).counters(slo.service, window)
    counts = slo_counts(slo, counters)
    if counts is None:
        return SloBurn(None, None, "" if _source(slo) is not None else NO_SOURCE)
    return SloBurn(burn_rate(counts, objective_of(slo)), counts.total)


def _prometheus_budgets(slos: Sequence[ServiceLevelObjective], now: datetime) -> dict[str, float | None]:
    """The Prometheus SLOs' budgets left (by SLO pk, as text for the cache), asked of their servers."""
    asked = _ask_prometheus(slos, lambda slo: (objective_of(slo).window,), now)
    budgets: dict[str, float | None] = {}
    for slo in slos:
        found = asked.get(slo.pk)
        objective = objective_of(slo)
        counts = None if found is None or found.error else slo_counts(slo, found.counters.get(objective.window))
        budgets[str(slo.pk)] = None if counts is None else budget_left(counts, objective)
    return budgets


def slo_budgets(now: datetime | None = None, *, evaluate_prometheus: bool = False) -> dict[str, float | None]:
    """Per service with an SLO: the smallest share of error budget left among its SLOs (1 untouched, 0
    spent, below 0 overspent), or None when none of them has data. What the dashboard's Services panel
    shows as "SLO budget left".

    The SLOs of Prometheus sources are asked of their servers only with ``evaluate_prometheus`` (beat's
    chart refresh), which keeps their budgets in the cache for 5 minutes; otherwise (a page) their budgets
    are read from there, so that no page waits on a Prometheus server (None when beat kept none)."""
    now = now or timezone.now()
    slos = _objectives()
    prometheus = [slo for slo in slos if slo.service.enabled and _is_prometheus(slo)]
    if evaluate_prometheus:
        kept = _prometheus_budgets(prometheus, now)
        try:
            cache.set(PROMETHEUS_BUDGETS_KEY, kept, PROMETHEUS_BUDGETS_SECONDS)
        except Exception:  # noqa: BLE001 - the cache down: the panel shows "no data", the refresh goes on
            logger.warning("The Prometheus SLOs' budgets could not be cached", exc_info=True)
    else:
        try:
            kept = cache.get(PROMETHEUS_BUDGETS_KEY) or {}
        except Exception:  # noqa: BLE001 - the cache down: "no data" rather than a page waiting on Prometheus
            kept = {}
    reader = _Reader(now, _latency_services(slos))
    budgets: dict[str, float | None] = {}
    for slo in slos:
        left: float | None = None
        if _is_prometheus(slo):
            left = kept.get(str(slo.pk))
        else:  # only the window's counts: no burn rates to read
            objective = objective_of(slo)
            counts = slo_counts(slo, reader.counters(slo.service, objective.window))
            left = None if counts is None else budget_left(counts, objective)
        known = [b for b in (budgets.get(slo.service.name), left) if b is not None]
        budgets[slo.service.name] = min(known) if known else None
    return budgets


# The burn windows as /metrics labels them.
BURN_WINDOW_LABELS = {
    timedelta(minutes=5): "5m",
    timedelta(minutes=30): "30m",
    timedelta(hours=1): "1h",
    timedelta(hours=6): "6h",
    timedelta(days=3): "3d",
}


def slo_figures(now: datetime | None = None) -> tuple[dict[str, float | None], list[dict[str, Any]]]:
    """Beat's chart refresh, once a minute: every SLO of an enabled service in one pass (a Prometheus
    source's asked of its server, every window at once). Returns what ``slo_budgets`` gives (each
    service's smallest budget left; the Prometheus SLOs' budgets kept in the cache for pages, as
    ``slo_budgets(evaluate_prometheus=True)`` does) and, per SLO, its budget left and burn rate per
    BURN_WINDOWS (``{"service", "slo", "budget_left", "burn": {"5m": rate or None, ...}}``) for /metrics."""
    now = now or timezone.now()
    slos = [slo for slo in _objectives() if slo.service.enabled]
    asked = _ask_prometheus(slos, _all_windows, now)
    reader = _Reader(now, _latency_services(slo for slo in slos if slo.pk not in asked))
    statuses = [_status(slo, reader, asked.get(slo.pk)) for slo in slos]
    kept = {str(status.slo.pk): status.budget_left for status in statuses if _is_prometheus(status.slo)}
    try:
        cache.set(PROMETHEUS_BUDGETS_KEY, kept, PROMETHEUS_BUDGETS_SECONDS)
    except Exception:  # noqa: BLE001 - the cache down: the panel shows "no data", the refresh goes on
        logger.warning("The Prometheus SLOs' budgets could not be cached", exc_info=True)
    budgets: dict[str, float | None] = {}
    figures: list[dict[str, Any]] = []
    for status in statuses:
        known = [b for b in (budgets.get(status.service), status.budget_left) if b is not None]
        budgets[status.service] = min(known) if known else None
        burn = {BURN_WINDOW_LABELS[window]: rate for window, rate in status.burn_rates.items()}
        figures.append({"service": status.service, "slo": status.name, "budget_left": status.budget_left, "burn": burn})
    return budgets, figures


def slo_burn_levels(severity: str, now: datetime | None = None) -> dict[tuple[str, str], float | None]:
    """For the slo_burn alert rule: per (service, SLO name) of the SLOs with alerting on, of enabled
    services, how far the workbook's ``severity`` ("page" or "ticket") alerts are
    from firing (above 1: firing; see ``_level``), None for no data (a gap, or a Prometheus server that
    failed: nothing fires or resolves on it)."""
    now = now or timezone.now()
    wanted = [alert for alert in WORKBOOK_ALERTS if alert.severity is Severity(severity)]
    windows = tuple(dict.fromkeys(w for alert in wanted for w in (alert.long_window, alert.short_window)))
    slos = [slo for slo in _objectives() if slo.alerting and slo.service.enabled]
    # Only the severity's windows are read (a minute's evaluation reads no 28-day window).
    asked = _ask_prometheus(slos, lambda slo: windows, now)
    reader = _Reader(now, _latency_services(slo for slo in slos if slo.pk not in asked))
    levels: dict[tuple[str, str], float | None] = {}
    for slo in slos:
        found = asked.get(slo.pk)
        if found is not None and found.error:
            levels[(slo.service.name, slo.name)] = None
            continue

        def counts(window: timedelta, slo: ServiceLevelObjective = slo, found: _Asked | None = found) -> Counts | None:
            if found is not None:
                return slo_counts(slo, found.counters.get(window))
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
    window's start edge. A Prometheus source's server is asked instead (``_prometheus_series``). Empty
    when the status has no counts for a failure (``status.error``)."""
    if status.error:
        return []
    now = now or timezone.now()
    source = _source(status.slo)
    if source is not None and source.kind == SourceKind.PROMETHEUS:
        return _prometheus_series(status, source, now)
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


def _prometheus_series(status: SloStatus, source: MetricSource, now: datetime) -> list[BudgetPoint]:
    """The budget left at ``count`` points a step apart across the last window (168 points, 4 h apart
    over 28 days; hourly under 7 days), from two range queries of the server (one for a latency SLO):
    what it counted in each step over the last two windows, each ``increase`` reading only its own step
    of samples, summed here as the hours are for a scrape source. Empty when the server fails (logged;
    the page shows the chart without data)."""
    slo, objective = status.slo, status.objective
    window = objective.window
    count = min(168, max(1, int(window / timedelta(hours=1))))
    step = timedelta(seconds=round(window.total_seconds() / count))
    steps = 2 * count - 1  # the first point's window starts count - 1 steps before the first one shown
    start = now - (steps - 1) * step
    try:
        found = promql.counters_range(
            source, start, now, step, buckets=slo.kind == ObjectiveKind.LATENCY, timeout=_timeout(source)
        )
    except promql.QueryFailed as error:
        logger.warning("SLO %s/%s: its Prometheus server failed: %s", slo.service.name, slo.name, error)
        return []
    per_step: dict[int, Counts] = {}
    for at, counters in found.items():
        index = round((at - start) / step)
        counts = slo_counts(slo, counters)
        if 0 <= index < steps and counts is not None:
            per_step[index] = counts
    bad = [0.0] * (steps + 1)
    total = [0.0] * (steps + 1)
    for index in range(steps):
        counts = per_step.get(index)
        bad[index + 1] = bad[index] + (counts.bad if counts else 0.0)
        total[index + 1] = total[index] + (counts.total if counts else 0.0)
    points: list[BudgetPoint] = []
    for index in range(count - 1, steps):
        window_bad = bad[index + 1] - bad[index + 1 - count]
        window_total = total[index + 1] - total[index + 1 - count]
        left = 1 - (window_bad / window_total) / objective.error_budget if window_total else None
        points.append(BudgetPoint(start + index * step, left, window_bad, window_total))
    return points
