"""SLO arithmetic: objectives, error budgets, burn rates and the multiwindow, multi-burn-rate alerts.

An objective is a share of good events over a rolling window: for availability, requests that did not
fail among all requests; for latency, requests served under a threshold among all requests. Its error
budget is the share allowed to be bad (0.1 % for 99.9 %). The burn rate is how fast the budget goes: the
bad share observed over some period divided by the budget, so that a burn rate of 1 spends exactly the
whole budget over the window.

The alert conditions are those of the Google SRE workbook (chapter "Alerting on SLOs", sixth iteration):
each fires when the burn rate is above its factor over a long window AND over a short one, the short one
(a twelfth of the long) confirming that the burn is still going on, so an alert stops soon after the
problem does. The factors are the workbook's for a 30-day window: 14.4 over 1 h spends 2 % of the
budget, 6 over 6 h spends 5 %, 1 over 3 days spends 10 %.

Pure functions on plain values; counts come from the request rollups (monitoring.rollup).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum

DEFAULT_WINDOW = timedelta(days=28)


class InvalidObjective(ValueError):
    """An SLO target outside (0, 1) or a window that is not positive."""


@dataclass(frozen=True)
class Objective:
    """`target` is the share of good events aimed at (0.999 for "99.9 %") over `window`."""

    target: float
    window: timedelta = DEFAULT_WINDOW

    def __post_init__(self) -> None:
        if not 0 < self.target < 1:
            raise InvalidObjective(f"an SLO target is a share between 0 and 1 (exclusive), not {self.target!r}")
        if self.window <= timedelta(0):
            raise InvalidObjective(f"an SLO window must be positive, not {self.window}")

    @property
    def error_budget(self) -> float:
        """The share of events allowed to be bad."""
        return 1 - self.target

    @property
    def budget_time(self) -> timedelta:
        """The budget as time of complete outage over the window (43.2 min for 99.9 % over 30 days)."""
        return self.window * self.error_budget


@dataclass(frozen=True)
class Counts:
    """Good and total events over some period: requests that succeeded, or were served under a threshold."""

    good: float
    total: float

    def __post_init__(self) -> None:
        if self.total < 0 or self.good < 0 or self.good > self.total:
            raise ValueError(f"counts need 0 <= good <= total, not good={self.good} total={self.total}")

    @property
    def bad(self) -> float:
        return self.total - self.good

    @property
    def good_ratio(self) -> float | None:
        """None when there was nothing to count: no traffic is neither good nor bad."""
        return self.good / self.total if self.total else None

    @property
    def bad_ratio(self) -> float | None:
        return self.bad / self.total if self.total else None

    def __add__(self, other: Counts) -> Counts:
        return Counts(self.good + other.good, self.total + other.total)


def availability(requests: float, errors: float) -> Counts:
    """An availability objective's counts: a request is good unless it failed."""
    return Counts(good=requests - errors, total=requests)


def latency(requests: float, under_threshold: float) -> Counts:
    """A latency objective's counts: a request is good when it was served under the threshold."""
    return Counts(good=under_threshold, total=requests)


def total(counts: Iterable[Counts]) -> Counts:
    result = Counts(0, 0)
    for item in counts:
        result = result + item
    return result


def burn_rate(counts: Counts, objective: Objective) -> float | None:
    """Bad share over the objective's budget: 1 spends exactly the budget over the window."""
    bad_ratio = counts.bad_ratio
    return None if bad_ratio is None else bad_ratio / objective.error_budget


def budget_spent(rate: float, period: timedelta, objective: Objective) -> float:
    """The share of the whole window's budget a burn rate spends over `period`."""
    return rate * (period / objective.window)


def burn_rate_spending(share: float, period: timedelta, objective: Objective) -> float:
    """The burn rate that spends `share` of the budget over `period` (14.4 for 2 % in 1 h of 30 days)."""
    return share * (objective.window / period)


def budget_left(counts: Counts, objective: Objective) -> float | None:
    """Share of the budget left after the window's counts: 1 untouched, 0 spent, below 0 overspent."""
    bad_ratio = counts.bad_ratio
    return None if bad_ratio is None else 1 - bad_ratio / objective.error_budget


def time_to_exhaustion(rate: float, objective: Objective, left: float = 1.0) -> timedelta | None:
    """How long a steady burn takes to spend what is left of the budget; None when nothing burns."""
    if rate <= 0:
        return None
    return objective.window * max(left, 0.0) / rate


class Severity(StrEnum):
    PAGE = "page"
    TICKET = "ticket"


@dataclass(frozen=True)
class BurnRateAlert:
    """Fires when the burn rate exceeds `factor` over both the long and the short window."""

    severity: Severity
    factor: float
    long_window: timedelta
    short_window: timedelta

    def threshold(self, objective: Objective) -> float:
        """The bad share above which this alert's windows count as burning."""
        return self.factor * objective.error_budget

    def is_firing(self, long: Counts, short: Counts, objective: Objective) -> bool:
        rates = (burn_rate(long, objective), burn_rate(short, objective))
        return all(rate is not None and rate > self.factor for rate in rates)


WORKBOOK_ALERTS = (
    BurnRateAlert(Severity.PAGE, 14.4, timedelta(hours=1), timedelta(minutes=5)),
    BurnRateAlert(Severity.PAGE, 6, timedelta(hours=6), timedelta(minutes=30)),
    BurnRateAlert(Severity.TICKET, 1, timedelta(days=3), timedelta(hours=6)),
)


def firing_alerts(
    objective: Objective,
    counts_over: Callable[[timedelta], Counts],
    alerts: Iterable[BurnRateAlert] = WORKBOOK_ALERTS,
) -> list[BurnRateAlert]:
    """The alerts whose two windows both burn too fast; `counts_over(d)` gives the counts of the last d."""
    return [
        alert
        for alert in alerts
        if alert.is_firing(counts_over(alert.long_window), counts_over(alert.short_window), objective)
    ]
