"""One way to ask for a service's signal over a window: request rate, error ratio, p50/p95/p99, up.

The dashboard, the alert rules, the operations API and the deploy analysis all ask through
``monitoring.selectors.service_signal`` / ``service_signals``, which land here. A scrape source's
signals come from the stored per-minute rollups (``ServiceMinute``; ``ServiceHour`` for windows of days);
a Prometheus source's are evaluated by its server (``monitoring.promql``).

A value is None when there is nothing to judge: no request in the window (for the ratios and latencies),
or no scrape at all (for up); ``error`` then says why when a source failed. ``requests`` is how many
requests the window held, so a caller can tell "too little traffic to judge" from a good figure.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, cast

from django.db.models import Q, Sum
from django.utils import timezone

from monitoring.models import MetricSource, Service, ServiceHour, ServiceMinute, SignalSample, SourceKind
from monitoring.rollup import Counters


class Signal(StrEnum):
    REQUEST_RATE = "request_rate"  # requests per second
    ERROR_RATIO = "error_ratio"  # 0..1
    P50 = "p50"  # seconds
    P95 = "p95"
    P99 = "p99"
    UP = "up"  # share of successful scrapes (or Prometheus' avg of up), 0..1


UNITS = {
    Signal.REQUEST_RATE: "req/s",
    Signal.ERROR_RATIO: "ratio",
    Signal.P50: "s",
    Signal.P95: "s",
    Signal.P99: "s",
    Signal.UP: "ratio",
}

# Windows longer than this read the hourly table (whole hours) rather than the minutes.
HOURLY_FROM = timedelta(hours=6)


class UnknownService(LookupError):
    """No service of that name."""


@dataclass(frozen=True)
class SignalValue:
    service: str
    signal: Signal
    window: timedelta
    value: float | None
    requests: float | None = None
    error: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "signal": self.signal.value,
            "unit": UNITS[self.signal],
            "window_seconds": int(self.window.total_seconds()),
            "value": self.value,
            "requests": self.requests,
            "error": self.error,
        }


@dataclass(frozen=True)
class WindowCounts:
    """A scrape source's whole-service counts over a window, gaps left out."""

    counters: Counters | None
    scrapes: int
    failed: int
    # The time the counted increases span, gaps left out (0 for rows written without it).
    seconds: float = 0.0

    @property
    def up(self) -> float | None:
        return (self.scrapes - self.failed) / self.scrapes if self.scrapes else None

    def since(self, earlier: WindowCounts) -> WindowCounts:
        """What was stored between an earlier reading of the same rows and this one (``stored_counts``
        read twice): the rows only grow, so the difference is exactly the rounds recorded in between
        (clamped at 0 against the rounding of float sums)."""
        counters = self.counters
        if counters is not None and earlier.counters is not None:
            before = earlier.counters
            buckets = {
                bound: max(0.0, count - before.buckets.get(bound, 0.0)) for bound, count in counters.buckets.items()
            }
            counters = Counters(
                max(0.0, counters.requests - before.requests), max(0.0, counters.errors - before.errors), buckets
            )
        return WindowCounts(
            counters,
            max(0, self.scrapes - earlier.scrapes),
            max(0, self.failed - earlier.failed),
            max(0.0, self.seconds - earlier.seconds),
        )


def decode_buckets(stored: Mapping[str, float]) -> dict[float, float]:
    return {math.inf if key == "+Inf" else float(key): float(value) for key, value in stored.items()}


def encode_buckets(buckets: Mapping[float, float]) -> dict[str, float]:
    return {"+Inf" if bound == math.inf else repr(float(bound)): count for bound, count in buckets.items()}


def _sum_rows(rows: Iterable[ServiceMinute | ServiceHour]) -> WindowCounts:
    total: Counters | None = None
    scrapes = failed = 0
    seconds = 0.0
    for row in rows:
        scrapes += row.scrapes
        failed += row.failed
        if row.requests is None:
            continue
        seconds += row.seconds
        counters = Counters(row.requests, row.errors or 0.0, decode_buckets(row.buckets))
        total = counters if total is None else total + counters
    return WindowCounts(total, scrapes, failed, seconds)


def window_counts(service: Service, since: datetime, until: datetime) -> WindowCounts:
    """The service's counts over [since, until): minutes for short windows, hours (then minutes at the
    edges) for long ones."""
    if until - since < HOURLY_FROM:
        return _sum_rows(ServiceMinute.objects.filter(service=service, route="", minute__gte=since, minute__lt=until))
    first_hour = since.replace(minute=0, second=0, microsecond=0)
    if first_hour < since:
        first_hour += timedelta(hours=1)
    last_hour = until.replace(minute=0, second=0, microsecond=0)
    rows: list[ServiceMinute | ServiceHour] = list(
        ServiceHour.objects.filter(service=service, hour__gte=first_hour, hour__lt=last_hour)
    )
    rows += ServiceMinute.objects.filter(service=service, route="", minute__gte=since, minute__lt=first_hour)
    rows += ServiceMinute.objects.filter(service=service, route="", minute__gte=last_hour, minute__lt=until)
    return _sum_rows(rows)


def _from_counts(name: str, signal: Signal, window: timedelta, counts: WindowCounts, error: str) -> SignalValue:
    counters = counts.counters
    requests = counters.requests if counters is not None else None
    value: float | None
    if signal is Signal.UP:
        value = counts.up
    elif counters is None:
        value = None
    elif signal is Signal.REQUEST_RATE:
        # Over the time the counted increases span, not the window's length: the window's edges cut
        # minutes (the current one is still filling) and a gap holds no requests, so dividing by the
        # window under-counts; as Prometheus' rate() does, the rate is the one observed.
        value = counters.requests / (counts.seconds or window.total_seconds())
    elif signal is Signal.ERROR_RATIO:
        value = counters.error_ratio
    else:
        value = counters.quantile({Signal.P50: 0.5, Signal.P95: 0.95, Signal.P99: 0.99}[signal])
    return SignalValue(name, signal, window, value, requests, error if value is None or signal is Signal.UP else "")


def _service(service: Service | str) -> Service:
    if isinstance(service, Service):
        return service
    found = Service.objects.filter(name=service).first()
    if found is None:
        raise UnknownService(f"No service named {service!r}.")
    return found


def _source(service: Service) -> MetricSource | None:
    return next((source for source in service.sources.all() if source.enabled), None)


def service_signals(
    service: Service | str, window: timedelta, now: datetime | None = None, signals: Iterable[Signal] = tuple(Signal)
) -> dict[Signal, SignalValue]:
    """The service's signals over the window ending at ``now``; UnknownService for a name not known."""
    found = _service(service)
    now = now or timezone.now()
    wanted = tuple(signals)
    source = _source(found)
    if source is not None and source.kind == SourceKind.PROMETHEUS:
        from monitoring import promql

        return promql.signal_values(source, wanted, window, now)
    error = source.last_error if source is not None else "The service has no enabled metric source."
    counts = window_counts(found, now - window, now)
    return {signal: _from_counts(found.name, signal, window, counts, error) for signal in wanted}


def service_signal(
    service: Service | str, signal: Signal, window: timedelta, now: datetime | None = None
) -> SignalValue:
    return service_signals(service, window, now, (signal,))[signal]


def stored_counts(service: Service | str, since: datetime) -> WindowCounts | None:
    """A scrape-sourced service's whole-service counts stored for the minutes from ``since`` on (the current
    one too, still filling). A reader that keeps two such readings gets an exact window from them
    (``WindowCounts.since``) rather than whole minutes: the deploy analysis does. None when the service's
    source is a Prometheus server, which stores nothing to read (``service_signals`` asks it)."""
    found = _service(service)
    source = _source(found)
    if source is not None and source.kind == SourceKind.PROMETHEUS:
        return None
    return _sum_rows(ServiceMinute.objects.filter(service=found, route="", minute__gte=since))


def signal_from_counts(service: str, signal: Signal, window: timedelta, counts: WindowCounts) -> SignalValue:
    """A signal from counts read otherwise (``stored_counts`` differences), computed as ``service_signals`` does."""
    return _from_counts(service, signal, window, counts, "")


# --- Many services at once (the dashboard) -------------------------------------------------------------
#
# The functions above answer for one service in a few queries; a page of twenty services would pay twenty
# times that. These read every service's rows in one query per table, so their cost does not grow with
# the number of services (only with the rows a window holds).


def _sources_of(services: Sequence[Service]) -> dict[int, MetricSource | None]:
    """Each service's first enabled source, in one query."""
    found: dict[int, MetricSource | None] = {service.pk: None for service in services}
    for source in MetricSource.objects.filter(service__in=list(found), enabled=True).order_by("service_id", "id"):
        found[source.service_id] = found[source.service_id] or source
    return found


def bulk_window_counts(services: Sequence[Service], since: datetime, until: datetime) -> dict[int, WindowCounts]:
    """Every service's whole-service counts over [since, until) from its minutes, in one query: for
    windows shorter than HOURLY_FROM (what ``window_counts`` reads minutes for)."""
    rows: dict[int, list[ServiceMinute]] = {service.pk: [] for service in services}
    for row in ServiceMinute.objects.filter(
        service__in=list(rows), route="", minute__gte=since, minute__lt=until
    ).order_by("service_id", "minute"):
        rows[row.service_id].append(row)
    return {pk: _sum_rows(found) for pk, found in rows.items()}


def services_signals(
    services: Sequence[Service],
    window: timedelta,
    now: datetime | None = None,
    signals: Iterable[Signal] = tuple(Signal),
) -> dict[str, dict[Signal, SignalValue]]:
    """``service_signals`` of many services (keyed by name) over a short window, in three queries whatever
    their number.

    A scrape source's figures come from its minutes as ``service_signals`` computes them. A Prometheus
    source's are the values its worker last evaluated and stored (``SignalSample``) within the window,
    rather than a round trip to the server per service and signal: a page of twenty services must not
    wait on forty HTTP requests, nor fail when that server does.
    """
    now = now or timezone.now()
    wanted = tuple(signals)
    sources = _sources_of(services)
    scraped = [s for s in services if (src := sources[s.pk]) is None or src.kind != SourceKind.PROMETHEUS]
    queried = [s for s in services if s not in scraped]
    counts = bulk_window_counts(scraped, now - window, now) if scraped else {}
    answer: dict[str, dict[Signal, SignalValue]] = {}
    for service in scraped:
        source = sources[service.pk]
        error = source.last_error if source is not None else "The service has no enabled metric source."
        answer[service.name] = {
            signal: _from_counts(service.name, signal, window, counts[service.pk], error) for signal in wanted
        }
    latest: dict[tuple[int, str], float | None] = {}
    if queried:
        samples = SignalSample.objects.filter(
            service__in=queried, signal__in=[s.value for s in wanted], at__gt=now - window, at__lte=now
        ).order_by("at")
        for service_id, signal_name, value in samples.values_list("service_id", "signal", "value"):
            latest[(service_id, signal_name)] = value  # ordered by time: the newest wins
    for service in queried:
        source = sources[service.pk]
        error = source.last_error if source is not None else ""
        answer[service.name] = {}
        for signal in wanted:
            value = latest.get((service.pk, signal.value))
            answer[service.name][signal] = SignalValue(
                service.name, signal, window, value, None, error if value is None else ""
            )
    return answer


@dataclass(frozen=True)
class Uptime:
    """Successful and attempted scrape rounds (or probes) over a window; ``ratio`` None when none ran."""

    good: int
    total: int

    @property
    def ratio(self) -> float | None:
        return self.good / self.total if self.total else None


UPTIME_WINDOWS = {"24h": timedelta(hours=24), "7d": timedelta(days=7), "30d": timedelta(days=30)}


def services_uptime(services: Sequence[Service], now: datetime | None = None) -> dict[int, dict[str, Uptime]]:
    """Each service's share of successful scrapes over 24 h, 7 d and 30 d, summed by the database in two
    queries whatever the number of services: the whole hours from the hourly rows, the edges (the part
    hour at the start of the 24 hours, the current hour not rolled up yet) from the minutes."""
    now = now or timezone.now()
    ids = [service.pk for service in services]
    hour = now.replace(minute=0, second=0, microsecond=0)
    day_since = now - UPTIME_WINDOWS["24h"]
    day_hours = day_since.replace(minute=0, second=0, microsecond=0)
    if day_hours < day_since:
        day_hours += timedelta(hours=1)
    minutes = (
        ServiceMinute.objects.filter(service__in=ids, route="", minute__lt=now)
        .filter(Q(minute__gte=day_since, minute__lt=day_hours) | Q(minute__gte=hour))
        .values("service_id")
        .annotate(
            head_scrapes=Sum("scrapes", filter=Q(minute__lt=day_hours)),
            head_failed=Sum("failed", filter=Q(minute__lt=day_hours)),
            tail_scrapes=Sum("scrapes", filter=Q(minute__gte=hour)),
            tail_failed=Sum("failed", filter=Q(minute__gte=hour)),
        )
        .order_by()
    )
    week_since = now - UPTIME_WINDOWS["7d"]
    month_since = now - UPTIME_WINDOWS["30d"]
    hours = (
        ServiceHour.objects.filter(service__in=ids, hour__gte=month_since, hour__lt=hour)
        .values("service_id")
        .annotate(
            day_scrapes=Sum("scrapes", filter=Q(hour__gte=day_hours)),
            day_failed=Sum("failed", filter=Q(hour__gte=day_hours)),
            week_scrapes=Sum("scrapes", filter=Q(hour__gte=week_since)),
            week_failed=Sum("failed", filter=Q(hour__gte=week_since)),
            month_scrapes=Sum("scrapes"),
            month_failed=Sum("failed"),
        )
        .order_by()
    )
    sums: dict[int, dict[str, int]] = {pk: {} for pk in ids}
    # Mappings: the stubs' row types know only the names written out, not the annotations.
    for row in cast(list[Mapping[str, Any]], [*minutes, *hours]):
        sums[row["service_id"]].update({k: int(v or 0) for k, v in row.items() if k != "service_id"})

    def uptime(found: dict[str, int], *parts: str) -> Uptime:
        scrapes = sum(found.get(f"{p}_scrapes", 0) for p in parts)
        failed = sum(found.get(f"{p}_failed", 0) for p in parts)
        return Uptime(scrapes - failed, scrapes)

    return {
        pk: {
            "24h": uptime(found, "head", "day", "tail"),
            "7d": uptime(found, "week", "tail"),
            "30d": uptime(found, "month", "tail"),
        }
        for pk, found in sums.items()
    }
