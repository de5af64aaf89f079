"""Job monitors' schedule arithmetic and state transitions: pure functions, no database, no clock.

A monitor expects a ping by its schedule: either every ``period`` seconds after the last one, or at the
next time a cron expression fires after the last one (read in the monitor's time zone, so a job at 02:30
local time is expected once per local day across a DST change). Past the expected time it is late; past
that plus the grace time it is down. Only a ping brings it back.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

NEW = "new"
UP = "up"
LATE = "late"
DOWN = "down"
PAUSED = "paused"

# What a ping says: the job started, succeeded, failed (``/fail`` or a non-zero exit status).
PING_START = "start"
PING_SUCCESS = "success"
PING_FAIL = "fail"


class InvalidSchedule(ValueError):
    """A cron expression or time zone that cannot be read; the message names what is wrong."""


@dataclass(frozen=True)
class Schedule:
    """Either ``period`` (seconds between pings) or ``cron`` with ``tz``; ``grace`` is the tolerance."""

    period: timedelta | None = None
    cron: str = ""
    tz: str = "UTC"
    grace: timedelta = timedelta(hours=1)

    def expected_after(self, last_ping: datetime) -> datetime:
        """When the ping after ``last_ping`` is due (an aware datetime in UTC)."""
        if self.cron:
            zone = zone_of(self.tz)
            try:
                # cronsim yields aware local times; from the next whole second, so a ping on a firing
                # minute expects the one after, not itself.
                fire = next(CronSim(self.cron, last_ping.astimezone(zone)))
            except (CronSimError, StopIteration) as exc:
                raise InvalidSchedule(f"cron expression {self.cron!r}: {str(exc) or 'never fires'}") from exc
            return fire.astimezone(UTC)
        if self.period is None:
            raise InvalidSchedule("a schedule needs a period or a cron expression")
        return last_ping + self.period


def zone_of(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise InvalidSchedule(f"unknown time zone {name!r}") from exc


def validate_cron(expr: str) -> None:
    """Raises InvalidSchedule unless ``expr`` is a five-field cron expression cronsim reads."""
    if len(expr.split()) != 5:
        raise InvalidSchedule("a cron expression has five fields: minute hour day-of-month month day-of-week")
    try:
        next(CronSim(expr, datetime(2000, 1, 1, tzinfo=UTC)))
    except (CronSimError, StopIteration) as exc:
        raise InvalidSchedule(f"cron expression {expr!r}: {str(exc) or 'never fires'}") from exc


def next_state(state: str, schedule: Schedule, last_ping: datetime | None, now: datetime) -> str:
    """The state a monitor is in at ``now`` with no new ping: what beat applies each minute.

    New and paused monitors wait for a ping, and a down one stays down until a ping brings it back
    (a failure ping leaves it down whatever the clock says). An up or late monitor turns late past
    the expected time and down past the expected time plus grace.
    """
    if state not in (UP, LATE) or last_ping is None:
        return state
    expected = schedule.expected_after(last_ping)
    if now >= expected + schedule.grace:
        return DOWN
    if now >= expected:
        return LATE
    return UP


def state_after_ping(state: str, kind: str) -> str:
    """The state a ping moves a monitor to: success is up, failure is down, a start changes nothing.

    A ping to a paused monitor resumes it (healthchecks.io's default): the job runs again. A start alone
    makes it new, not up: its last success may be long past, and beat would turn it down at once.
    """
    if kind == PING_SUCCESS:
        return UP
    if kind == PING_FAIL:
        return DOWN
    return NEW if state == PAUSED else state


def kind_of_exit_status(status: int) -> str:
    """Exit status 0 is success, 1..255 a failure; anything else is refused by the caller."""
    return PING_SUCCESS if status == 0 else PING_FAIL
