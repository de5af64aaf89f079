"""The SLO pages: ``/slo/`` lists every SLO (objective, window, budget left, burn rates, the workbook's
page and ticket alerts), ``/slo/<service>/<name>/`` draws how its error budget burned over the window.

Read-only pages of monitoring, opened like the dashboard (reading alerts is what it takes); the figures
come from ``monitoring.selectors`` (``slo_statuses``, ``slo_status``, ``budget_series``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone

from controlplane.access import operator_page
from controlplane.changes import Change, changes_between
from monitoring.selectors import SloStatus, budget_series, slo_status, slo_statuses
from monitoring.slo import WORKBOOK_ALERTS, time_to_exhaustion
from monitoring.slo_status import WINDOW_WORDS, BudgetPoint

VIEW_PERMISSION = "alerting.view_alert"  # as the dashboard: a monitoring page


def _percent(share: float) -> str:
    return f"{share * 100:.1f} %"


@dataclass
class BudgetChart:
    """The budget left over the rolling window at each point, as an SVG line from 100 % (untouched) down
    to 0 % (spent) and below (overspent), with labelled axes; each point has a ``<title>`` under the
    pointer. A point with nothing counted in its window breaks the line."""

    points: list[BudgetPoint]
    start: datetime
    end: datetime
    width: int = 640
    left: int = 46
    right: int = 8
    top: int = 8
    plot: int = 160
    bottom: int = 20
    changes: Sequence[Change] = ()  # deployments, flag changes... over the window (controlplane.changes)

    @property
    def markers(self) -> list[dict[str, Any]]:
        """A line per change, what, who and when in its ``<title>``: what moved as the budget burned."""
        return [change.marker(self._x(change.time)) for change in self.changes]

    @property
    def height(self) -> int:
        return self.top + self.plot + self.bottom

    @property
    def x_end(self) -> int:
        return self.width - self.right

    @property
    def x_middle(self) -> float:
        return (self.left + self.x_end) / 2

    @property
    def y_middle(self) -> float:
        return self.top + self.plot / 2

    @property
    def has_data(self) -> bool:
        return any(p.budget_left is not None for p in self.points)

    @property
    def floor(self) -> float:
        """The axis' bottom: 0 %, or a round step below it when the budget went negative (at most -100 %)."""
        lowest = min((p.budget_left for p in self.points if p.budget_left is not None), default=0.0)
        if lowest >= 0:
            return 0.0
        return -min(1.0, math.ceil(-lowest * 4 - 1e-9) / 4)

    def _x(self, moment: datetime) -> float:
        share = (moment - self.start) / (self.end - self.start)
        return self.left + max(0.0, min(1.0, share)) * (self.x_end - self.left)

    def _y(self, value: float) -> float:
        floor = self.floor
        clipped = max(floor, min(1.0, value))
        return self.top + (1.0 - clipped) / (1.0 - floor) * self.plot

    @property
    def lines(self) -> list[str]:
        """The polylines' points, one per unbroken run of points with data."""
        runs: list[list[str]] = [[]]
        for point in self.points:
            if point.budget_left is None:
                if runs[-1]:
                    runs.append([])
                continue
            runs[-1].append(f"{self._x(point.at):.1f},{self._y(point.budget_left):.1f}")
        return [" ".join(run) for run in runs if len(run) >= 2]

    @property
    def dots(self) -> list[dict[str, float]]:
        """A lone point with data has no line: a dot shows it."""
        found = [p for p in self.points if p.budget_left is not None]
        if len(found) != 1:
            return []
        return [{"x": round(self._x(found[0].at), 1), "y": round(self._y(found[0].budget_left or 0), 1)}]

    @property
    def value_ticks(self) -> list[dict[str, Any]]:
        values = [1.0, 0.5, 0.0] + ([self.floor] if self.floor < 0 else [])
        return [{"y": round(self._y(v), 1), "label": f"{v * 100:.0f} %", "zero": v == 0} for v in values]

    @property
    def time_ticks(self) -> list[dict[str, Any]]:
        span = self.end - self.start
        step = timedelta(days=max(1, round(span / timedelta(days=1) / 5)))
        if span <= timedelta(days=1):
            step = timedelta(hours=6)
        label = "%H:%M" if step < timedelta(days=1) else "%d %b"
        start = timezone.localtime(self.start)
        tick = start.replace(hour=0, minute=0, second=0, microsecond=0)
        while tick <= start:
            tick += step
        ticks = []
        while tick < self.end:
            x = self._x(tick)
            if self.left + 20 <= x <= self.x_end - 20:
                ticks.append({"x": round(x, 1), "label": tick.strftime(label)})
            tick += step
        return ticks

    @property
    def slots(self) -> list[dict[str, Any]]:
        """A hover area per point, with what the point says in words."""
        rows = []
        previous = float(self.left)
        for index, point in enumerate(self.points):
            x = self._x(point.at)
            following = self._x(self.points[index + 1].at) if index + 1 < len(self.points) else self.x_end
            x0 = (previous + x) / 2 if index else float(self.left)
            x1 = (x + following) / 2
            previous = x
            when = timezone.localtime(point.at).strftime("%d %b %H:%M")
            if point.budget_left is None:
                words = f"{when}: no requests counted in the window"
            else:
                words = (
                    f"{when}: {_percent(point.budget_left)} of the budget left "
                    f"({point.bad:,.0f} of {point.total:,.0f} requests bad)"
                )
            rows.append({"x": round(x0, 1), "width": round(max(x1 - x0, 0.5), 1), "title": words})
        return rows


# The workbook's alerts in words, for the pages.
ALERT_WORDS = [
    f"{alert.severity}: over {alert.factor:g}x for {WINDOW_WORDS[alert.long_window]} "
    f"and {WINDOW_WORDS[alert.short_window]}"
    for alert in WORKBOOK_ALERTS
]


def _exhaustion_words(status: SloStatus) -> str:
    """How long the budget lasts at the last hour's burn, in words ("" when nothing burns or is known)."""
    rate = status.burn_rates.get(timedelta(hours=1))
    if rate is None or status.budget_left is None:
        return ""
    if status.budget_left <= 0:
        return "The budget is spent."
    lasts = time_to_exhaustion(rate, status.objective, status.budget_left)
    if lasts is None:
        return "Nothing burned over the last hour."
    hours = lasts / timedelta(hours=1)
    when = f"{hours:.1f} hours" if hours < 48 else f"{hours / 24:.0f} days"
    return f"At the last hour's burn rate ({rate:.2f}x), the budget lasts {when} more."


@operator_page(VIEW_PERMISSION)
def slo_list(request: HttpRequest) -> HttpResponse:
    now = timezone.now()
    return render(request, "slo/index.html", {"statuses": slo_statuses(now), "now": now, "alerts": ALERT_WORDS})


@operator_page(VIEW_PERMISSION)
def slo_detail(request: HttpRequest, service: str, name: str) -> HttpResponse:
    now = timezone.now()
    status = slo_status(service, name, now)
    if status is None:
        raise Http404("No such SLO.")
    start = now - status.objective.window
    chart = BudgetChart(budget_series(status, now), start, now, changes=changes_between(start, now))
    return render(
        request,
        "slo/detail.html",
        {
            "status": status,
            "chart": chart,
            "now": now,
            "alerts": ALERT_WORDS,
            "exhaustion": _exhaustion_words(status),
            "budget_percent": f"{status.objective.error_budget * 100:.4g}",
            "budget_time_minutes": round(status.objective.budget_time / timedelta(minutes=1), 1),
        },
    )
