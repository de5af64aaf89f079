"""What the operator's dashboard shows, read in a fixed number of queries whatever the data's size.

The request charts over 24 hours and 7 days sum up to millions of per-minute rollups; beat computes
them once a minute into the shared cache (``dashboard_charts_refresh``) and the page reads them from
there. The last hour is small enough to read live.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.core.cache import cache
from django.db.models import Sum
from django.db.models.functions import TruncHour
from django.utils import timezone

from monitoring.alert_models import Alert, AlertState
from monitoring.models import BUCKET_FIELDS, HealthMetric, RequestRollup
from monitoring.selectors import percentile_from_buckets

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


# --- Health score and tiles -------------------------------------------------------------------------


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
    def sparkline(self) -> str:
        """SVG polyline points (120 x 24) of the tile's main measurement over the last hour."""
        values = [v for _, v, _ in self.points if v is not None]
        if len(values) < 2:
            return ""
        low, high = min(values), max(values)
        span = (high - low) or 1.0
        step = 120 / (len(values) - 1)
        return " ".join(f"{i * step:.1f},{22 - (v - low) / span * 20:.1f}" for i, v in enumerate(values))


@dataclass
class Deduction:
    reason: str
    points: int


def health(now: datetime, firing: list[Alert]) -> tuple[int, list[Deduction], list[Tile]]:
    """The score (0-100), what lowers it, and one tile per component, from one query of the last hour."""
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
            deductions.append(Deduction(f"{component} {measurement}: {status} ({output[:120]})", STATUS_POINTS[status]))
    for alert in firing:
        if alert.state == AlertState.FIRING and alert.acknowledged_at is None:
            points = ALERT_POINTS.get(alert.rule.severity, 5)
            deductions.append(Deduction(f"alert firing: {alert.rule.name} ({alert.rule.severity})", points))
    deductions.sort(key=lambda d: -d.points)
    score = max(0, 100 - sum(d.points for d in deductions))
    return score, deductions, sorted(tiles.values(), key=lambda t: (-rank.get(t.status, 0), t.component))


def open_alerts() -> list[Alert]:
    return list(Alert.objects.open().select_related("rule").order_by("-started_at")[:20])


# --- Request charts ----------------------------------------------------------------------------------


_SUMS = {name: Sum(name) for name in ("count", "errors", *BUCKET_FIELDS)}


def _series(since: datetime, until: datetime, grain: str) -> list[dict[str, Any]]:
    from monitoring.selectors import PROBE_VIEWS

    rows = RequestRollup.objects.filter(minute__gte=since, minute__lt=until).exclude(view__in=PROBE_VIEWS)
    if grain == "hour":
        grouped = rows.annotate(t=TruncHour("minute")).values("t").annotate(**_SUMS).order_by("t")
    else:
        grouped = rows.values("minute").annotate(**_SUMS).order_by("minute")
    points = []
    for row in grouped:
        buckets = [row[name] or 0 for name in BUCKET_FIELDS]
        count = row["count"] or 0
        points.append(
            {
                "t": (row.get("t") or row.get("minute")).isoformat(),
                "count": count,
                "p50": percentile_from_buckets(buckets, 0.5),
                "p95": percentile_from_buckets(buckets, 0.95),
                "p99": percentile_from_buckets(buckets, 0.99),
                "error_pct": round((row["errors"] or 0) / count * 100, 3) if count else None,
            }
        )
    return points


def charts_refresh(now: datetime | None = None) -> dict[str, Any]:
    """Compute the 24 h and 7 d charts and keep them in the shared cache (beat, every minute)."""
    now = now or timezone.now()
    charts = {"computed_at": now.isoformat()}
    for name in ("24h", "7d"):
        span, grain = WINDOWS[name]
        charts[name] = _series(now - span, now, grain)
    cache.set(CHART_CACHE_KEY, charts, CHART_CACHE_SECONDS)
    return charts


def charts(now: datetime) -> dict[str, Any]:
    """Every window's series: the last hour live, the others from the cache (computed here if missing)."""
    try:
        stored = cache.get(CHART_CACHE_KEY)
    except Exception:  # noqa: BLE001 - the cache down: compute, slower but right
        stored = None
    if stored is None:
        stored = charts_refresh(now)
    span, grain = WINDOWS["1h"]
    return {
        "1h": _series(now - span, now, grain),
        "24h": stored["24h"],
        "7d": stored["7d"],
        "computed_at": stored["computed_at"],
    }


@dataclass
class Chart:
    name: str
    points: list[dict[str, Any]]
    width: int = 320
    height: int = 90

    def _line(self, key: str, top: float) -> str:
        values = [(i, p[key]) for i, p in enumerate(self.points) if p[key] is not None]
        if len(values) < 2 or not top:
            return ""
        step = self.width / max(1, len(self.points) - 1)
        return " ".join(f"{i * step:.1f},{self.height - 4 - v / top * (self.height - 8):.1f}" for i, v in values)

    @property
    def latency_top(self) -> float:
        return max((p["p99"] or 0 for p in self.points), default=0) or 1.0

    @property
    def p50(self) -> str:
        return self._line("p50", self.latency_top)

    @property
    def p95(self) -> str:
        return self._line("p95", self.latency_top)

    @property
    def p99(self) -> str:
        return self._line("p99", self.latency_top)

    @property
    def error_top(self) -> float:
        return max((p["error_pct"] or 0 for p in self.points), default=0) or 1.0

    @property
    def errors(self) -> str:
        return self._line("error_pct", self.error_top)

    @property
    def summary(self) -> dict[str, Any]:
        """Request-weighted figures of the window, for the text beside the chart."""
        total = sum(p["count"] for p in self.points)
        if not total:
            return {"count": 0}
        worst = max(self.points, key=lambda p: p["p95"] or 0)
        errors = sum((p["error_pct"] or 0) * p["count"] / 100 for p in self.points)
        return {"count": total, "worst_p95": worst["p95"], "error_pct": round(errors / total * 100, 3)}


def chart_list(now: datetime) -> tuple[list[Chart], str]:
    data = charts(now)
    return [Chart(name, data[name]) for name in ("1h", "24h", "7d")], data["computed_at"]
