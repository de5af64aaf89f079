from __future__ import annotations

from datetime import timedelta

import pytest

from monitoring.slo import (
    DEFAULT_WINDOW,
    WORKBOOK_ALERTS,
    BurnRateAlert,
    Counts,
    InvalidObjective,
    Objective,
    Severity,
    availability,
    budget_left,
    budget_spent,
    burn_rate,
    burn_rate_spending,
    firing_alerts,
    latency,
    time_to_exhaustion,
    total,
)

THIRTY_DAYS = Objective(0.999, timedelta(days=30))


def test_budget_of_99_9_percent_over_30_days_is_43_2_minutes() -> None:
    assert THIRTY_DAYS.error_budget == pytest.approx(0.001)
    assert THIRTY_DAYS.budget_time.total_seconds() == pytest.approx(43.2 * 60)


def test_default_window_is_28_days() -> None:
    assert Objective(0.99).window == DEFAULT_WINDOW == timedelta(days=28)


@pytest.mark.parametrize(
    ("rate", "period", "share"),
    [
        # The workbook's table of the recommended alerts for a 99.9 % SLO over 30 days.
        (14.4, timedelta(hours=1), 0.02),
        (6, timedelta(hours=6), 0.05),
        (1, timedelta(days=3), 0.10),
    ],
)
def test_workbook_burn_rates_and_the_budget_they_spend(rate: float, period: timedelta, share: float) -> None:
    assert budget_spent(rate, period, THIRTY_DAYS) == pytest.approx(share)
    assert burn_rate_spending(share, period, THIRTY_DAYS) == pytest.approx(rate)


def test_burn_rate_is_the_bad_share_over_the_budget() -> None:
    # 1.44 % of requests failing against a 0.1 % budget: the workbook's 14.4x.
    assert burn_rate(availability(requests=10_000, errors=144), THIRTY_DAYS) == pytest.approx(14.4)
    # A complete outage burns 1000x and spends the 30 days' budget in 43.2 minutes.
    outage = burn_rate(availability(requests=50, errors=50), THIRTY_DAYS)
    assert outage == pytest.approx(1000)
    assert time_to_exhaustion(1000, THIRTY_DAYS) == timedelta(minutes=43.2)
    assert time_to_exhaustion(0, THIRTY_DAYS) is None
    assert burn_rate(availability(requests=0, errors=0), THIRTY_DAYS) is None


def test_budget_left() -> None:
    assert budget_left(availability(requests=1_000_000, errors=0), THIRTY_DAYS) == pytest.approx(1)
    assert budget_left(availability(requests=1_000_000, errors=250), THIRTY_DAYS) == pytest.approx(0.75)
    assert budget_left(availability(requests=1_000_000, errors=1_000), THIRTY_DAYS) == pytest.approx(0)
    assert budget_left(availability(requests=1_000_000, errors=3_000), THIRTY_DAYS) == pytest.approx(-2)
    assert budget_left(availability(requests=0, errors=0), THIRTY_DAYS) is None


def test_latency_objective_counts_requests_under_the_threshold() -> None:
    # 99 % under 2 s: 9,950 of 10,000 under it leaves half the budget.
    objective = Objective(0.99)
    counts = latency(requests=10_000, under_threshold=9_950)
    assert counts.bad == 50
    assert budget_left(counts, objective) == pytest.approx(0.5)
    assert burn_rate(counts, objective) == pytest.approx(0.5)


def test_counts_add_up_and_refuse_impossible_values() -> None:
    assert total([Counts(9, 10), Counts(0, 0), Counts(5, 5)]) == Counts(14, 15)
    with pytest.raises(ValueError, match="good <= total"):
        Counts(good=11, total=10)
    with pytest.raises(ValueError, match="good <= total"):
        availability(requests=5, errors=6)


@pytest.mark.parametrize("target", [0, 1, 1.5, -0.1, 99.9])
def test_a_target_outside_0_1_is_refused(target: float) -> None:
    with pytest.raises(InvalidObjective, match="between 0 and 1"):
        Objective(target)


def test_a_window_that_is_not_positive_is_refused() -> None:
    with pytest.raises(InvalidObjective, match="must be positive"):
        Objective(0.999, timedelta(0))


def test_the_workbook_alerts() -> None:
    assert [(a.severity, a.factor, a.long_window, a.short_window) for a in WORKBOOK_ALERTS] == [
        (Severity.PAGE, 14.4, timedelta(hours=1), timedelta(minutes=5)),
        (Severity.PAGE, 6, timedelta(hours=6), timedelta(minutes=30)),
        (Severity.TICKET, 1, timedelta(days=3), timedelta(hours=6)),
    ]
    assert WORKBOOK_ALERTS[0].threshold(THIRTY_DAYS) == pytest.approx(0.0144)


def _windows(error_ratios: dict[timedelta, float]) -> dict[timedelta, Counts]:
    return {window: availability(requests=100_000, errors=100_000 * ratio) for window, ratio in error_ratios.items()}


HOUR, DAY = timedelta(hours=1), timedelta(days=1)
QUIET = {
    timedelta(minutes=5): 0.0,
    timedelta(minutes=30): 0.0,
    HOUR: 0.0,
    6 * HOUR: 0.0,
    3 * DAY: 0.0,
}


def _firing(error_ratios: dict[timedelta, float]) -> list[tuple[Severity, float]]:
    counts = _windows({**QUIET, **error_ratios})
    return [(alert.severity, alert.factor) for alert in firing_alerts(THIRTY_DAYS, counts.__getitem__)]


def test_a_fast_burn_pages_when_confirmed_by_the_short_window() -> None:
    # 2 % errors (20x) for the last hour and still now.
    assert _firing({HOUR: 0.02, timedelta(minutes=5): 0.02}) == [(Severity.PAGE, 14.4)]


def test_a_fast_burn_that_has_stopped_does_not_page() -> None:
    # The hour still shows the burn, the last five minutes do not: the problem is over.
    assert _firing({HOUR: 0.02, timedelta(minutes=5): 0.0}) == []
    # And a short spike alone is not enough either.
    assert _firing({HOUR: 0.01, timedelta(minutes=5): 0.5}) == []


def test_a_slower_burn_pages_on_six_hours_and_a_slow_one_makes_a_ticket() -> None:
    assert _firing({6 * HOUR: 0.007, timedelta(minutes=30): 0.007}) == [(Severity.PAGE, 6)]
    assert _firing({3 * DAY: 0.0015, 6 * HOUR: 0.0015}) == [(Severity.TICKET, 1)]
    # Burning at half the pace the budget allows is no alert.
    assert _firing({3 * DAY: 0.0005, 6 * HOUR: 0.0005}) == []


def test_no_traffic_fires_nothing() -> None:
    alert = BurnRateAlert(Severity.PAGE, 14.4, HOUR, timedelta(minutes=5))
    assert not alert.is_firing(Counts(0, 0), Counts(0, 0), THIRTY_DAYS)
    assert not alert.is_firing(availability(100, 100), Counts(0, 0), THIRTY_DAYS)
