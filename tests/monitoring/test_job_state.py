"""The job monitors' schedule and state transitions, on a fixed clock and without the database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from monitoring.jobs import (
    DOWN,
    LATE,
    NEW,
    PAUSED,
    PING_FAIL,
    PING_START,
    PING_SUCCESS,
    UP,
    InvalidSchedule,
    Schedule,
    kind_of_exit_status,
    next_state,
    state_after_ping,
    validate_cron,
)

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
HOURLY = Schedule(period=timedelta(hours=1), grace=timedelta(minutes=10))


@pytest.mark.parametrize(
    ("after", "expected"),
    [
        (timedelta(minutes=59, seconds=59), UP),
        (timedelta(hours=1), LATE),
        (timedelta(hours=1, minutes=9, seconds=59), LATE),
        (timedelta(hours=1, minutes=10), DOWN),
        (timedelta(days=3), DOWN),
    ],
)
def test_period_schedule_goes_late_then_down(after: timedelta, expected: str) -> None:
    assert next_state(UP, HOURLY, T0, T0 + after) == expected
    assert next_state(LATE, HOURLY, T0, T0 + after) == expected


@pytest.mark.parametrize("state", [NEW, PAUSED, DOWN])
def test_new_paused_and_down_wait_for_a_ping(state: str) -> None:
    assert next_state(state, HOURLY, T0, T0 + timedelta(days=30)) == state
    assert next_state(state, HOURLY, None, T0 + timedelta(days=30)) == state


def test_cron_schedule_in_utc() -> None:
    daily = Schedule(cron="30 2 * * *", tz="UTC", grace=timedelta(minutes=30))
    ping = datetime(2026, 6, 1, 2, 31, tzinfo=UTC)
    assert daily.expected_after(ping) == datetime(2026, 6, 2, 2, 30, tzinfo=UTC)
    # A ping exactly on the firing minute expects the next day's run, not itself.
    assert daily.expected_after(datetime(2026, 6, 1, 2, 30, tzinfo=UTC)) == datetime(2026, 6, 2, 2, 30, tzinfo=UTC)
    assert next_state(UP, daily, ping, datetime(2026, 6, 2, 2, 29, tzinfo=UTC)) == UP
    assert next_state(UP, daily, ping, datetime(2026, 6, 2, 2, 45, tzinfo=UTC)) == LATE
    assert next_state(UP, daily, ping, datetime(2026, 6, 2, 3, 0, tzinfo=UTC)) == DOWN


def test_cron_in_a_time_zone_across_the_end_of_daylight_saving() -> None:
    # 09:00 in New York: 13:00 UTC under EDT, 14:00 UTC after the clocks go back on 1 November 2026.
    nine = Schedule(cron="0 9 * * *", tz="America/New_York", grace=timedelta(hours=1))
    ping = datetime(2026, 10, 31, 13, 0, 5, tzinfo=UTC)
    assert nine.expected_after(ping) == datetime(2026, 11, 1, 14, 0, tzinfo=UTC)
    # Read in UTC the job would already be down at 14:30; in its own zone it is only late.
    assert next_state(UP, nine, ping, datetime(2026, 11, 1, 14, 30, tzinfo=UTC)) == LATE
    assert next_state(UP, nine, ping, datetime(2026, 11, 1, 13, 30, tzinfo=UTC)) == UP
    assert next_state(UP, nine, ping, datetime(2026, 11, 1, 15, 0, tzinfo=UTC)) == DOWN


def test_cron_in_a_time_zone_across_the_start_of_daylight_saving() -> None:
    # 02:30 does not exist in Berlin on 29 March 2026: the run is expected when the clocks jump, at 03:00
    # CEST (01:00 UTC), and the next day at 02:30 CEST (00:30 UTC).
    night = Schedule(cron="30 2 * * *", tz="Europe/Berlin", grace=timedelta(minutes=15))
    assert night.expected_after(datetime(2026, 3, 28, 1, 30, tzinfo=UTC)) == datetime(2026, 3, 29, 1, 0, tzinfo=UTC)
    assert night.expected_after(datetime(2026, 3, 29, 1, 0, tzinfo=UTC)) == datetime(2026, 3, 30, 0, 30, tzinfo=UTC)


def test_pings_move_the_state() -> None:
    assert state_after_ping(NEW, PING_SUCCESS) == UP
    assert state_after_ping(DOWN, PING_SUCCESS) == UP
    assert state_after_ping(UP, PING_FAIL) == DOWN
    assert state_after_ping(LATE, PING_START) == LATE
    assert state_after_ping(NEW, PING_START) == NEW
    assert state_after_ping(PAUSED, PING_START) == NEW  # resumed, waiting for the run's success
    assert state_after_ping(PAUSED, PING_SUCCESS) == UP
    assert kind_of_exit_status(0) == PING_SUCCESS
    assert kind_of_exit_status(1) == PING_FAIL
    assert kind_of_exit_status(255) == PING_FAIL


@pytest.mark.parametrize("expr", ["", "* * * *", "61 * * * *", "* * * * * * *", "0 0 31 2 *", "bad cron x y z"])
def test_bad_cron_expressions_are_refused(expr: str) -> None:
    with pytest.raises(InvalidSchedule):
        validate_cron(expr)


def test_unknown_time_zone_is_refused() -> None:
    with pytest.raises(InvalidSchedule, match="Mars/Olympus"):
        Schedule(cron="0 9 * * *", tz="Mars/Olympus").expected_after(T0)
