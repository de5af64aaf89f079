"""What the operator's dashboard shows, read in a fixed number of queries whatever the data's size.

The request charts over 24 hours and 7 days sum up to millions of per-minute rollups; beat computes
them once a minute into the shared cache (``dashboard_charts_refresh``) and the page reads them from
there. The last hour is small enough to read live.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.core.cache import cache
from django.db.models import Sum
from django.db.models.functions import TruncHour
from django.utils import timezone

from alerting.selectors import firing_unacknowledged
from controlplane.changes import Change, changes_between
from monitoring import slo_status
from monitoring.models import BUCKET_FIELDS, HealthMetric, JobMonitor, RequestRollup, Service
from monitoring.selectors import percentile_from_buckets
from monitoring.service_signals import UPTIME_WINDOWS, Uptime, services_uptime
from monitoring.services_panel import ServiceRow, endpoint_counts, endpoint_names

if TYPE_CHECKING:
    from alerting.selectors import Alert

CHART_CACHE_KEY = "dashboard:charts:v1"
CHART_CACHE_SECONDS = 300  # beat refreshes every minute; a stopped beat shows figures at most 5 min old
WINDOWS = {
    "1h": (timedelta(hours=1), "minute"),
    "24h": (timedelta(hours=24), "hour"),
    "7d": (timedelta(days=7), "hour"),
}
STATUS_POINTS = {"fail": 15, "warn": 5}
ALERT_POINTS = {"critical": 20, "warning": 10, "info": 2}
STATUS_ICON = {"pass": "✓", "warn": "!", "fail": "✕", "": "?"}
SERVICE_POINTS = {"down": 15, "errors": 10, "slow": 5}
JOB_POINTS = {"down": 10, "late": 5}
JUDGED_JOB_STATES = ("up", "late", "down")  # new and paused monitors say nothing of the product yet


# --- Health score and tiles -------------------------------------------------------------------------

# The checks every install runs (the enhanced-only ones and the operators' endpoints appear once they
# report): before each has reported once, its tile says it is waiting rather than the page leaving it out.
EXPECTED_COMPONENTS = ("database", "cache", "broker", "celery-workers", "celery-beat", "disk", "migrations", "backups")
COMPONENT_WORDS = {
    "database": "Database",
    "cache": "Cache",
    "broker": "Broker",
    "celery-workers": "Workers",
    "celery-beat": "Scheduler (beat)",
    "disk": "Disk",
    "migrations": "Migrations",
    "backups": "Backups",
    "sentry": "Sentry",
    "alert-channels": "Alert channels",
}


def _number(value: float) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".")


def _hours_ago(hours: float) -> str:
    if hours < 1:
        return f"{round(hours * 60)} min ago"
    if hours < 48:
        return f"{_number(round(hours, 1))} h ago"
    return f"{_number(round(hours / 24, 1))} days ago"


def _plural(value: float, one: str, many: str) -> str:
    return f"{_number(value)} {one if value == 1 else many}"


# measurement -> its figure in words, from (value, unit); value None is said by each.
FIGURES: dict[str, Any] = {
    "responseTime": lambda v, u: "no answer" if v is None else f"answered in {_number(v)} {u or 'ms'}",
    "count": lambda v, u: "no worker alive" if not v else f"{_plural(v, 'worker', 'workers')} alive",
    "heartbeatAge": lambda v, u: "no heartbeat yet" if v is None else f"last heartbeat {_number(v)} s ago",
    "freePercent": lambda v, u: "free space unknown" if v is None else f"{_number(v)} % free",
    "unapplied": lambda v, u: (
        "all migrations applied" if v == 0 else f"{_plural(v or 0, 'migration', 'migrations')} not applied"
    ),
    "latestVerifiedAge": lambda v, u: (
        "no verified backup yet" if v is None else f"latest verified backup: {_hours_ago(v)}"
    ),
    "configured": lambda v, u: "configured" if v else "not configured",
    "enabled": lambda v, u: f"{_plural(v or 0, 'channel', 'channels')} enabled",
}


def measurement_words(measurement: str) -> str:
    """``responseTime`` -> "response time": a measurement without its own phrase, in words."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", measurement).replace("_", " ").lower()


@dataclass
class Tile:
    component: str
    status: str = "pass"
    value: float | None = None
    unit: str = ""
    measurement: str = ""
    output: str = ""
    checked_at: datetime | None = None
    points: list[tuple[datetime, float | None, str]] = field(default_factory=list)

    @property
    def icon(self) -> str:
        return STATUS_ICON.get(self.status, "?")

    @property
    def name(self) -> str:
        if self.component.startswith("endpoint:"):
            return f"{self.component.removeprefix('endpoint:')} (endpoint)"
        return COMPONENT_WORDS.get(self.component, self.component)

    @property
    def waiting(self) -> bool:
        return self.checked_at is None

    @property
    def figure(self) -> str:
        """The measurement in words: "answered in 3 ms", "latest verified backup: 3 h ago"."""
        if self.waiting:
            return "waiting for its first check"
        phrase = FIGURES.get(self.measurement)
        if phrase is not None:
            return phrase(self.value, self.unit)
        what = measurement_words(self.measurement)
        if self.value is None:
            return f"{what}: not measured"
        return f"{what}: {_number(self.value)}{' ' + self.unit if self.unit else ''}"

    @property
    def sparkline(self) -> str:
        """SVG polyline points (120 x 24) of the tile's main measurement over the last hour."""
        values = [v for _, v, _ in self.points if v is not None]
        if len(values) < 2:
            return ""
        low, high = min(values), max(values)
        span = (high - low) or 1.0
        step = 120 / (len(values) - 1)
        return " ".join(f"{i * step:.1f},{22 - (v - low) / span * 20:.1f}" for i, v in enumerate(values))

    @property
    def sparkline_range(self) -> str:
        """What the sparkline spans, in words, for its tooltip."""
        values = [v for _, v, _ in self.points if v is not None]
        if not values:
            return ""
        unit = f" {self.unit}" if self.unit else ""
        return f"{len(values)} checks, from {_number(min(values))} to {_number(max(values))}{unit}"


@dataclass
class Deduction:
    reason: str
    points: int


def product_deductions(services: Sequence[ServiceRow], jobs: Sequence[JobMonitor]) -> list[Deduction]:
    """What the product's services and scheduled jobs take off the score: a service down, over 1 % errors
    or over 2 s p95 (the report's targets) over the panel's last minutes; a job monitor down or late."""
    found: list[Deduction] = []
    for service in services:
        if service.status == "down":
            found.append(
                Deduction(
                    f"service {service.name} down ({service.error[:120] or 'no scrape succeeded'})",
                    SERVICE_POINTS["down"],
                )
            )
        if service.too_many_errors:
            found.append(
                Deduction(
                    f"service {service.name} error ratio {service.error_text} (over 1 %)", SERVICE_POINTS["errors"]
                )
            )
        if service.too_slow:
            found.append(Deduction(f"service {service.name} p95 {service.p95_text} (over 2 s)", SERVICE_POINTS["slow"]))
    for job in jobs:
        if job.state in JOB_POINTS:
            found.append(Deduction(f"job {job.name} {job.state}", JOB_POINTS[job.state]))
    return found


def health(
    now: datetime,
    firing: list[Alert],
    services: Sequence[ServiceRow] = (),
    jobs: Sequence[JobMonitor] = (),
) -> tuple[int | None, list[Deduction], list[Tile]]:
    """The score (0-100), what lowers it, and one tile per component, from one query of the last hour;
    the product's services and job monitors (read by the Services panel) lower it too.

    The score is None while nothing is known: no check has reported within the hour and no service or
    job has a figure. A score of 100 before anything was measured would say "all is well" beside
    components that say nothing is known yet.
    """
    since = now - timedelta(hours=1)
    rows = (
        HealthMetric.objects.filter(time__gte=since)
        .order_by("component", "measurement", "time")
        .values_list("component", "measurement", "time", "value", "unit", "status", "output")
    )
    latest: dict[tuple[str, str], tuple] = {}
    series: dict[tuple[str, str], list[tuple[datetime, float | None, str]]] = defaultdict(list)
    for component, measurement, time, value, unit, status, output in rows:
        latest[(component, measurement)] = (time, value, unit, status, output)
        series[(component, measurement)].append((time, value, status))
    tiles: dict[str, Tile] = {}
    deductions: list[Deduction] = []
    rank = {"pass": 0, "warn": 1, "fail": 2}
    for (component, measurement), (time, value, unit, status, output) in sorted(latest.items()):
        tile = tiles.setdefault(component, Tile(component, status="pass"))
        if tile.measurement == "" or rank.get(status, 0) > rank.get(tile.status, 0):
            tile.status, tile.value, tile.unit, tile.measurement, tile.output = status, value, unit, measurement, output
            tile.points = series[(component, measurement)]
        tile.checked_at = max(filter(None, [tile.checked_at, time]))
        if status in STATUS_POINTS:
            label = COMPONENT_WORDS.get(component, component)
            deductions.append(
                Deduction(f"{label} {measurement_words(measurement)}: {status} ({output[:120]})", STATUS_POINTS[status])
            )
    for alert in firing_unacknowledged(firing):
        points = ALERT_POINTS.get(alert.rule.severity, 5)
        deductions.append(Deduction(f"alert firing: {alert.rule.name} ({alert.rule.severity})", points))
    deductions += product_deductions(services, jobs)
    deductions.sort(key=lambda d: -d.points)
    known = bool(tiles) or any(s.up is not None for s in services) or any(j.state in JUDGED_JOB_STATES for j in jobs)
    score = max(0, 100 - sum(d.points for d in deductions)) if known else None
    reported = sorted(tiles.values(), key=lambda t: (-rank.get(t.status, 0), t.component))
    if not tiles:
        return score, deductions, []
    waiting = [Tile(c, status="waiting") for c in EXPECTED_COMPONENTS if c not in tiles]
    return score, deductions, reported + waiting


# --- Request charts ----------------------------------------------------------------------------------


_SUMS = {name: Sum(name) for name in ("count", "errors", *BUCKET_FIELDS)}


def _sums(since: datetime, until: datetime, grain: str) -> Iterable[Mapping[str, Any]]:
    """The rollups' sums per hour (``t``) or per minute (``minute``), keyed as in _SUMS: a mapping, since
    the stubs' row types know only the names written out."""
    from monitoring.selectors import PROBE_VIEWS

    rows = RequestRollup.objects.filter(minute__gte=since, minute__lt=until).exclude(view__in=PROBE_VIEWS)
    if grain == "hour":
        return rows.annotate(t=TruncHour("minute")).values("t").annotate(**_SUMS).order_by("t")
    return rows.values("minute").annotate(**_SUMS).order_by("minute")


def _series(since: datetime, until: datetime, grain: str) -> list[dict[str, Any]]:
    points = []
    for row in _sums(since, until, grain):
        buckets = [row[name] or 0 for name in BUCKET_FIELDS]
        count = row["count"] or 0
        points.append(
            {
                "t": (row["t"] if "t" in row else row["minute"]).isoformat(),
                "count": count,
                "p50": percentile_from_buckets(buckets, 0.5),
                "p95": percentile_from_buckets(buckets, 0.95),
                "p99": percentile_from_buckets(buckets, 0.99),
                "error_pct": round((row["errors"] or 0) / count * 100, 3) if count else None,
            }
        )
    return points


def charts_refresh(now: datetime | None = None, *, evaluate_prometheus: bool = True) -> dict[str, Any]:
    """Compute the 24 h and 7 d charts and keep them in the shared cache (beat, every minute). Beat's
    refresh also asks the Prometheus sources' servers for their SLOs' budgets; a page refreshing the
    charts itself (the cache was empty) passes ``evaluate_prometheus=False`` and reads beat's last ones."""
    now = now or timezone.now()
    charts: dict[str, Any] = {"computed_at": now.isoformat()}
    for name in ("24h", "7d"):
        span, grain = WINDOWS[name]
        charts[name] = _series(now - span, now, grain)
    # The monitored endpoints' probes over 30 days are too many to count on every refresh of the page:
    # the hours before the current one are counted here, the current hour live (endpoint_uptime).
    cut = _floor_hour(now)
    counted = endpoint_counts(endpoint_names(), {w: now - span for w, span in UPTIME_WINDOWS.items()}, cut)
    charts["endpoint_uptime"] = {
        name: {w: [u.good, u.total] for w, u in windows.items()} for name, windows in counted.items()
    }
    # Each SLO's budget reads its whole window (28 days) per SLO: once a minute here, not on every page.
    # Beat's refresh also keeps each SLO's budget and burn rates for /metrics ("slo_figures"); a page's
    # refresh (no Prometheus server asked) leaves them out until beat's next one.
    if evaluate_prometheus:
        charts["slo_budgets"], charts["slo_figures"] = slo_status.slo_figures(now)
    else:
        charts["slo_budgets"] = slo_status.slo_budgets(now, evaluate_prometheus=False)
    # The services' uptime per window, for /metrics (the panel counts its own, live).
    services = list(Service.objects.filter(enabled=True))
    counted_services = services_uptime(services, now) if services else {}
    charts["service_uptime"] = {
        service.name: {w: [u.good, u.total] for w, u in counted_services.get(service.pk, {}).items()}
        for service in services
    }
    cache.set(CHART_CACHE_KEY, charts, CHART_CACHE_SECONDS)
    return charts


def _stored_charts(now: datetime) -> dict[str, Any]:
    try:
        stored = cache.get(CHART_CACHE_KEY)
    except Exception:  # noqa: BLE001 - the cache down: compute, slower but right
        stored = None
    if stored is None or not {"endpoint_uptime", "slo_budgets"} <= set(stored):  # missing, or an older release's
        stored = charts_refresh(now, evaluate_prometheus=False)  # a page never waits on a Prometheus server
    return dict(stored)


def slo_budgets(now: datetime) -> dict[str, float | None]:
    """Per service with an SLO, its smallest budget left, as beat last computed it (at most a minute old)."""
    return dict(_stored_charts(now)["slo_budgets"])


def endpoint_uptime(names: Sequence[str], now: datetime) -> dict[str, dict[str, Uptime]]:
    """The monitored endpoints' uptime per window: the full hours as beat last counted them, and the
    probes since (one query over an hour or two of rows)."""
    stored = _stored_charts(now)
    cut = _floor_hour(min(datetime.fromisoformat(stored["computed_at"]), now))
    live = endpoint_counts(names, dict.fromkeys(UPTIME_WINDOWS, cut), now)
    found: dict[str, dict[str, Uptime]] = {}
    for name in names:
        kept = stored["endpoint_uptime"].get(name, {})
        recent = live.get(name, {})
        found[name] = {}
        for window in UPTIME_WINDOWS:
            good, total = kept.get(window, [0, 0])
            tail = recent.get(window, Uptime(0, 0))
            found[name][window] = Uptime(good + tail.good, total + tail.total)
    return found


def _floor_hour(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def charts(now: datetime) -> dict[str, Any]:
    """Every window's series: the last hour live, the others from the cache (computed here if missing).

    The hours the cached figures end in (and any after) are read live as well, at the hour grain: a
    request made a minute ago shows on the 24 h and 7 d charts now, not after beat's next refresh, and
    a fresh install's first minute fills them. One query, over two hours at most of per-minute rows.
    """
    stored = _stored_charts(now)
    cut = _floor_hour(min(datetime.fromisoformat(stored["computed_at"]), now))
    tail = _series(cut, now, "hour")
    windows = {}
    for name in ("24h", "7d"):
        since = now - WINDOWS[name][0]
        kept = [p for p in stored[name] if since <= datetime.fromisoformat(p["t"]) < cut]
        windows[name] = kept + tail
    span, grain = WINDOWS["1h"]
    return {"1h": _series(now - span, now, grain), **windows, "computed_at": stored["computed_at"]}


def _nice_top(value: float) -> float:
    """The smallest 1, 2 or 5 times a power of ten at or above ``value``: an axis's round top."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for factor in (1, 2, 5, 10):
        if value <= factor * power * (1 + 1e-9):
            return float(factor * power)
    return float(10 * power)


def _short(value: float) -> str:
    if value >= 10_000:
        return f"{_number(value / 1000)}k"
    return _number(value)


WINDOW_WORDS = {"1h": "Last hour", "24h": "Last 24 hours", "7d": "Last 7 days"}
GRAIN = {"minute": timedelta(minutes=1), "hour": timedelta(hours=1)}
# (step between time ticks, strftime of their labels) per window: 4 to 7 labels across the chart.
TIME_TICKS = {
    "1h": (timedelta(minutes=15), "%H:%M"),
    "24h": (timedelta(hours=6), "%H:%M"),
    "7d": (timedelta(days=1), "%a"),  # the weekday; a slot's title gives the date
}


@dataclass
class Chart:
    """A window's request figures drawn as two SVG charts that share the time axis: latency (p50, p95,
    p99 lines) and requests (bars, the part answered 5xx in red). Both axes carry labels; each time slot
    has a ``<title>`` with its figures, which a browser shows under the pointer without any script."""

    name: str
    points: list[dict[str, Any]]
    now: datetime | None = None
    width: int = 320
    left: int = 46  # room for the value labels
    right: int = 6
    top: int = 6
    latency_plot: int = 76  # height of the plot area
    requests_plot: int = 34
    bottom: int = 18  # room for the time labels
    changes: Sequence[Change] = ()  # deployments, flag changes... (controlplane.changes), oldest first

    # --- geometry

    @property
    def span(self) -> timedelta:
        return WINDOWS[self.name][0]

    @property
    def grain(self) -> timedelta:
        return GRAIN[WINDOWS[self.name][1]]

    @property
    def end(self) -> datetime:
        return self.now or timezone.now()

    @property
    def start(self) -> datetime:
        return self.end - self.span

    @property
    def plot_width(self) -> int:
        return self.width - self.left - self.right

    @property
    def latency_height(self) -> int:
        return self.top + self.latency_plot + self.bottom

    @property
    def requests_height(self) -> int:
        return self.top + self.requests_plot + self.bottom

    @property
    def x_end(self) -> int:
        return self.left + self.plot_width

    @property
    def x_middle(self) -> float:
        return self.left + self.plot_width / 2

    @property
    def latency_middle(self) -> float:
        return self.top + self.latency_plot / 2

    @property
    def requests_middle(self) -> float:
        return self.top + self.requests_plot / 2

    def _x(self, moment: datetime) -> float:
        share = (moment - self.start) / self.span
        return self.left + max(0.0, min(1.0, share)) * self.plot_width

    def _slots(self) -> list[tuple[dict[str, Any], float, float]]:
        """Each point with the x where its slot (minute or hour) starts and its width, clipped to the window."""
        slots = []
        for point in self.points:
            begins = datetime.fromisoformat(point["t"])
            x0, x1 = self._x(begins), self._x(begins + self.grain)
            if x1 > x0:
                slots.append((point, x0, x1))
        return slots

    # --- axes

    @property
    def time_ticks(self) -> list[dict[str, Any]]:
        step, label = TIME_TICKS[self.name]
        start, end = timezone.localtime(self.start), timezone.localtime(self.end)
        # The first round moment of the clock after the window's start: 10:15, 12:00, midnight.
        midnight = start.replace(hour=0, minute=0, second=0, microsecond=0)
        tick = midnight + step * (math.floor((start - midnight) / step) + 1)
        ticks = []
        while tick < end:
            x = self._x(tick)
            if self.left + 16 <= x <= self.x_end - 16:  # a label cut at the edge helps nobody
                ticks.append({"x": round(x, 1), "label": tick.strftime(label)})
            tick += step
        return ticks

    def _value_ticks(self, top: float, height: int, unit: str) -> list[dict[str, Any]]:
        values = [0.0, top / 2, top]
        if unit == "" and top / 2 != int(top / 2):
            values = [0.0, top]  # whole requests only
        return [
            {"y": round(self.top + height - v / top * height, 1), "label": f"{_short(v)}{' ' + unit if unit else ''}"}
            for v in values
        ]

    @property
    def latency_top(self) -> float:
        return _nice_top(max((p["p99"] or 0 for p in self.points), default=0))

    @property
    def latency_ticks(self) -> list[dict[str, Any]]:
        return self._value_ticks(self.latency_top, self.latency_plot, "ms")

    @property
    def requests_top(self) -> float:
        return _nice_top(max((p["count"] for p in self.points), default=0))

    @property
    def requests_ticks(self) -> list[dict[str, Any]]:
        return self._value_ticks(self.requests_top, self.requests_plot, "")

    # --- marks

    def _y(self, value: float, top: float, height: int) -> float:
        return self.top + height - min(value, top) / top * height

    def _line(self, key: str) -> str:
        coords = [
            f"{(x0 + x1) / 2:.1f},{self._y(p[key], self.latency_top, self.latency_plot):.1f}"
            for p, x0, x1 in self._slots()
            if p[key] is not None
        ]
        return " ".join(coords) if len(coords) >= 2 else ""

    @property
    def p50(self) -> str:
        return self._line("p50")

    @property
    def p95(self) -> str:
        return self._line("p95")

    @property
    def p99(self) -> str:
        return self._line("p99")

    @property
    def dots(self) -> list[dict[str, Any]]:
        """A dot per measured point while there are few of them: a lone point has no line to show it."""
        slots = [s for s in self._slots() if s[0]["p95"] is not None]
        if len(slots) > 24:
            return []
        top = self.latency_top
        return [
            {
                "x": round((x0 + x1) / 2, 1),
                **{key: round(self._y(p[key], top, self.latency_plot), 1) for key in ("p50", "p95", "p99")},
            }
            for p, x0, x1 in slots
        ]

    @property
    def slots(self) -> list[dict[str, Any]]:
        """Per time slot: its request bar, its errors and the words its tooltip says."""
        base = self.top + self.requests_plot
        clock = "%H:%M" if self.name != "7d" else "%a %d %H:%M"
        rows = []
        for p, x0, x1 in self._slots():
            count = p["count"]
            errors = round((p["error_pct"] or 0) * count / 100)
            bar_top = self._y(count, self.requests_top, self.requests_plot)
            error_top = self._y(errors, self.requests_top, self.requests_plot)
            when = timezone.localtime(datetime.fromisoformat(p["t"])).strftime(clock)
            figures = [f"{when}: {_plural(count, 'request', 'requests')}"]
            if p["p95"] is not None:
                figures.append(f"p50 {_number(p['p50'])} ms, p95 {_number(p['p95'])} ms, p99 {_number(p['p99'])} ms")
            figures.append(f"error rate {_number(p['error_pct'] or 0)} %")
            rows.append(
                {
                    "x": round(x0, 1),
                    "width": round(max(x1 - x0 - 0.3, 0.6), 1),
                    "bar_y": round(bar_top, 1),
                    "bar_height": round(base - bar_top, 1),
                    "error_y": round(error_top, 1),
                    "error_height": round(base - error_top, 1) if errors else 0,
                    "title": "; ".join(figures),
                }
            )
        return rows

    @property
    def shown_changes(self) -> list[Change]:
        """The changes within the window: its markers, and the text that says the same to a screen reader."""
        return [change for change in self.changes if self.start <= change.time <= self.end]

    @property
    def markers(self) -> list[dict[str, Any]]:
        """A vertical line per change across both plots, with its what, who and when as its ``<title>``."""
        return [change.marker(self._x(change.time)) for change in self.shown_changes]

    # --- words

    @property
    def title(self) -> str:
        return WINDOW_WORDS[self.name]

    @property
    def per(self) -> str:
        return "minute" if self.grain == GRAIN["minute"] else "hour"

    @property
    def summary(self) -> dict[str, Any]:
        """Request-weighted figures of the window, for the text beside the chart."""
        total = sum(p["count"] for p in self.points)
        if not total:
            return {"count": 0}
        worst = max(self.points, key=lambda p: p["p95"] or 0)
        errors = sum((p["error_pct"] or 0) * p["count"] / 100 for p in self.points)
        minutes = self.span.total_seconds() / 60
        return {
            "count": total,
            "per_minute": _number(round(total / minutes, 2)),
            "worst_p95": worst["p95"],
            "error_pct": round(errors / total * 100, 3),
        }


def recent_changes(now: datetime) -> tuple[datetime, list[Change]]:
    """Since when, and the changes of the longest chart's window (7 days): one query serves every chart
    on the page (and the alerts that fired within it)."""
    since = now - WINDOWS["7d"][0]
    return since, changes_between(since, now + timedelta(seconds=1))


def chart_list(now: datetime, changes: Sequence[Change] | None = None) -> tuple[list[Chart], str]:
    data = charts(now)
    changes = recent_changes(now)[1] if changes is None else changes
    return [Chart(name, data[name], now, changes=changes) for name in ("1h", "24h", "7d")], data["computed_at"]
