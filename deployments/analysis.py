"""The ``analysis`` step kind: a release watching itself for a while, failing (so rolling back) on a breach.

A step::

    {"name": "analysis", "kind": "analysis", "duration": 600, "interval": 15, "window": 300,
     "failure_limit": 3, "min_requests": 50, "on_inconclusive": "wait",
     "conditions": [
        {"service": "wingmanmatch-backend", "signal": "error_ratio", "max": 0.01, "baseline": {"margin": 0.005}},
        {"service": "wingmanmatch-backend", "signal": "p95", "max": 2.0},
        {"service": "wingmanmatch-backend", "signal": "up", "min": 1.0},
        {"service": "wingmanmatch-backend", "slo": "availability", "max": 14.4},
        {"alerts": ["Backend down", "Database down"]}]}

Every ``interval`` seconds from its start until ``duration`` has passed (``duration // interval`` rounds,
the first one ``interval`` after the start), each condition is measured over the trailing ``window``
(a condition may set its own ``window``):

- ``signal`` of a service (``error_ratio`` 0..1, ``p50``/``p95``/``p99`` seconds, ``up`` 0..1,
  ``request_rate`` req/s), breached above ``max`` or below ``min``;
- ``slo``: the burn rate of that SLO of the service over the window (``monitoring.selectors
  .slo_window_burn``), breached above ``max``;
- ``alerts``: breached while any of the named alert rules has an alert firing (``alerting.selectors``).

A condition breached ``failure_limit`` times in a row fails the step. A window that held fewer than
``min_requests`` requests (or no data at all) is *inconclusive* for the traffic conditions (error ratio,
latencies, SLO burn), and ``on_inconclusive`` says what that measurement counts as: ``fail`` a breach,
``pass`` a pass, ``wait`` neither: the round does not count towards the duration, so the step keeps
measuring until it has had its rounds, and fails, saying so, when its ``timeout`` (default twice the
duration, at least 60 s more) comes first.

The window, and fresh data. A window never reaches back before the step's start: what was served
before it is the previous release's (see the baseline), and counting it would dilute the release's own
figures for the first ``window`` seconds. At its start and after each round's wait the step runs one
scrape round of each service it watches itself (``monitoring.scrape.scrape_sources_run``, with the
conditional claim beat's scrapes take, so the two never count a request twice) rather than wait for
beat's next one, then reads the service's stored counts (``monitoring.selectors.stored_counts``). The
scrape sources store counts per minute, but the rows only grow: the difference between two of the step's
readings is exactly what the rounds in between recorded. So a signal's window is exact: from the newest
reading back to the newest reading at least ``window`` seconds older (or to the start). A Prometheus
source's server is asked for the window (``service_signals``), and an SLO's burn rate is read from the
stored minutes (the whole minutes overlapping the window, back to the step's start).

The baseline. A condition with ``"baseline": {"margin": m}`` is also breached when it is worse than the
previous release's own figure by more than ``m`` (in the signal's unit; worse is higher, lower for
``up`` and ``request_rate``). The previous release's figure is read over the same length of window,
rounded up to whole minutes, ending at the start of the minute this deployment started in: every
request of it was served before the deployment changed anything. It is read once, when the step starts.
A baseline window with fewer than ``min_requests`` requests cannot be compared with: the condition is
then judged by its ``max``/``min`` alone (inconclusive if it has neither), and the output says so.

Every measurement is stored (``AnalysisMeasurement``: value, the threshold it was judged against, the
baseline, the verdict) and drawn on the deployment page. A cancel stops the step at once (the waits are
``Context.sleep``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeGuard

from django.utils import timezone

if TYPE_CHECKING:
    from deployments.steps import Context

SIGNALS = ("error_ratio", "p50", "p95", "p99", "up", "request_rate")
# Judged only with enough requests in the window; up and the rate are what tells there is no traffic.
TRAFFIC_SIGNALS = ("error_ratio", "p50", "p95", "p99")
LOWER_IS_WORSE = ("up", "request_rate")
RATIOS = ("error_ratio", "up")
UNITS = {"error_ratio": "", "up": "", "request_rate": " req/s", "p50": " s", "p95": " s", "p99": " s"}
ON_INCONCLUSIVE = ("fail", "pass", "wait")
FIELDS = {
    "duration", "interval", "window", "failure_limit", "min_requests", "on_inconclusive", "conditions",
    "unmonitored",
}  # fmt: skip
# ``unmonitored``: what the step does when none of the services it names is monitored here. "fail" (the
# default: a renamed service must not pass a release unwatched) or "skip" (say so and pass: the demo
# pipeline on a machine where the demo product does not run).
UNMONITORED = ("fail", "skip")
CONDITION_FIELDS = {"name", "service", "signal", "slo", "alerts", "max", "min", "baseline", "window"}
DEFAULTS: dict[str, Any] = {
    "interval": 15,
    "window": 300,
    "failure_limit": 3,
    "min_requests": 50,
    "on_inconclusive": "wait",
}
MAX_CONDITIONS = 20
MAX_WINDOW = 6 * 3600  # the minutes' table: longer windows read hours, too coarse to judge a release
MINUTE = timedelta(minutes=1)
PASS, FAIL, INCONCLUSIVE = "pass", "fail", "inconclusive"
_CONDITION_ALIASES = {
    "metric": "signal", "threshold": "max", "maximum": "max", "minimum": "min", "rules": "alerts",
    "alert_rules": "alerts", "objective": "slo", "compare": "baseline",
}  # fmt: skip
STEP_ALIASES = {
    "seconds": "duration", "for": "duration", "every": "interval", "checks": "conditions",
    "metrics": "conditions", "limit": "failure_limit", "failures": "failure_limit",
    "inconclusive": "on_inconclusive", "minimum_requests": "min_requests",
}  # fmt: skip


# --- Schema --------------------------------------------------------------------------------------


def _number(value: Any) -> TypeGuard[float]:
    return not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)


def _seconds(step: dict[str, Any], key: str, where: str, low: float, high: float, *, required: bool = False) -> None:
    if key not in step and not required:
        return
    value = step.get(key)
    if not _number(value) or not low <= value <= high:
        prefix = "required: " if required else ""
        raise _invalid(f"{where}.{key}", f"{prefix}seconds, from {low:g} to {high:g}")


def _invalid(field_path: str, message: str) -> Exception:
    from deployments.steps import InvalidStep

    return InvalidStep(field_path, message)


def check_step(step: dict[str, Any], where: str) -> None:
    """The analysis fields of ``step`` (the common ones are checked by ``steps.validate_step``)."""
    _seconds(step, "duration", where, 1, 86400, required=True)
    _seconds(step, "interval", where, 0.1, 3600)
    _seconds(step, "window", where, 1, MAX_WINDOW)
    if step.get("interval", DEFAULTS["interval"]) > step["duration"]:
        raise _invalid(f"{where}.interval", "at most the duration: the step measures at least at its start and end")
    if "timeout" in step and step["timeout"] < step["duration"]:
        raise _invalid(f"{where}.timeout", "at least the duration")
    limit = step.get("failure_limit", 1)
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 1000:
        raise _invalid(f"{where}.failure_limit", "breaches in a row that fail the step: a whole number from 1")
    least = step.get("min_requests", 0)
    if isinstance(least, bool) or not isinstance(least, int) or not 0 <= least <= 10**9:
        raise _invalid(f"{where}.min_requests", "requests a window needs to be judged: a whole number from 0")
    if step.get("on_inconclusive", "wait") not in ON_INCONCLUSIVE:
        raise _invalid(f"{where}.on_inconclusive", f"one of {', '.join(ON_INCONCLUSIVE)}")
    if step.get("unmonitored", "fail") not in UNMONITORED:
        raise _invalid(f"{where}.unmonitored", f"one of {', '.join(UNMONITORED)}")
    conditions = step.get("conditions")
    if not isinstance(conditions, list) or not conditions:
        raise _invalid(
            f"{where}.conditions",
            'required: a list like [{"service": "backend", "signal": "error_ratio", "max": 0.01}]',
        )
    if len(conditions) > MAX_CONDITIONS:
        raise _invalid(f"{where}.conditions", f"at most {MAX_CONDITIONS} conditions")
    for index, condition in enumerate(conditions):
        check_condition(condition, f"{where}.conditions[{index}]")


def check_condition(condition: Any, where: str) -> None:
    from deployments.steps import did_you_mean

    if not isinstance(condition, dict):
        raise _invalid(where, "must be a JSON object")
    unknown = sorted(set(condition) - CONDITION_FIELDS)
    if unknown:
        guess = did_you_mean(unknown[0], sorted(CONDITION_FIELDS - condition.keys()), _CONDITION_ALIASES)
        raise _invalid(f"{where}.{unknown[0]}", f"not a field of a condition{guess}")
    kinds = [key for key in ("signal", "slo", "alerts") if key in condition]
    if len(kinds) != 1:
        raise _invalid(where, "one of signal (with service), slo (with service) or alerts")
    if "name" in condition and (not isinstance(condition["name"], str) or not 1 <= len(condition["name"]) <= 100):
        raise _invalid(f"{where}.name", "1 to 100 characters")
    _seconds(condition, "window", where, 1, MAX_WINDOW)
    if kinds[0] == "alerts":
        rules = condition["alerts"]
        if not isinstance(rules, list) or not rules or not all(isinstance(r, str) and r for r in rules):
            raise _invalid(f"{where}.alerts", "the names of alert rules none of which may fire: a non-empty list")
        extra = sorted(set(condition) - {"alerts", "name"})
        if extra:
            raise _invalid(f"{where}.{extra[0]}", "an alerts condition takes only alerts and name")
        return
    service = condition.get("service")
    if not isinstance(service, str) or not 1 <= len(service) <= 100:
        raise _invalid(f"{where}.service", "required: the name of a service (Monitoring > Services)")
    if kinds[0] == "slo":
        if not isinstance(condition["slo"], str) or not condition["slo"]:
            raise _invalid(f"{where}.slo", "the name of one of the service's SLOs")
        if "min" in condition:
            raise _invalid(f"{where}.min", "an SLO's burn rate takes a max")
        if not _number(condition.get("max")) or condition["max"] <= 0:
            raise _invalid(f"{where}.max", "required: the highest burn rate allowed, more than 0 (1 spends the budget)")
    else:
        signal = condition["signal"]
        if signal not in SIGNALS:
            raise _invalid(f"{where}.signal", f"one of {', '.join(SIGNALS)}")
        for bound in ("max", "min"):
            if bound in condition:
                value = condition[bound]
                if not _number(value) or value < 0 or (signal in RATIOS and value > 1):
                    what = "a ratio from 0 to 1 (0.01 is 1 %)" if signal in RATIOS else "a number, 0 or more"
                    raise _invalid(f"{where}.{bound}", what)
        if not {"max", "min", "baseline"} & condition.keys():
            raise _invalid(f"{where}.max", "required: max, min or baseline (what the signal is judged against)")
    if "baseline" in condition:
        baseline = condition["baseline"]
        if not isinstance(baseline, dict) or set(baseline) != {"margin"}:
            raise _invalid(f"{where}.baseline", 'an object: {"margin": how much worse than the previous release}')
        if not _number(baseline["margin"]) or baseline["margin"] < 0:
            raise _invalid(f"{where}.baseline.margin", "a number, 0 or more, in the signal's unit")


def default_timeout(step: dict[str, Any]) -> float:
    duration = float(step["duration"])
    return max(2 * duration, duration + 60)


# --- What a condition is -------------------------------------------------------------------------


def label(condition: dict[str, Any]) -> str:
    if condition.get("name"):
        return str(condition["name"])
    if "alerts" in condition:
        return "alerts firing: " + ", ".join(condition["alerts"])
    if "slo" in condition:
        return f"{condition['service']} SLO {condition['slo']} burn rate"
    return f"{condition['service']} {condition['signal']}"


def _worse_is_lower(condition: dict[str, Any]) -> bool:
    return condition.get("signal") in LOWER_IS_WORSE


def _fmt(value: float | None, condition: dict[str, Any]) -> str:
    if value is None:
        return "no data"
    unit = UNITS.get(condition.get("signal", ""), "") if "signal" in condition else ("x" if "slo" in condition else "")
    return f"{value:.4g}{unit}"


def _words(condition: dict[str, Any]) -> str:
    """The condition's rule in words, for dry runs: 'wingmanmatch p95 at most 2 s'."""
    if "alerts" in condition:
        return "none of the alert rules " + ", ".join(condition["alerts"]) + " firing"
    parts = []
    if "max" in condition:
        parts.append(f"at most {_fmt(condition['max'], condition)}")
    if "min" in condition:
        parts.append(f"at least {_fmt(condition['min'], condition)}")
    if "baseline" in condition:
        margin = _fmt(condition["baseline"]["margin"], condition)
        parts.append(f"no worse than the previous release by more than {margin}")
    return f"{label(condition)} {' and '.join(parts)}"


def describe(step: dict[str, Any]) -> str:
    settings = {**DEFAULTS, **step}
    conditions = "; ".join(_words(c) for c in step["conditions"])
    return (
        f"analyse for {settings['duration']:g} s, every {settings['interval']:g} s over a trailing "
        f"{settings['window']:g} s window: {conditions}; {settings['failure_limit']} breaches in a row fail it "
        f"(and roll back); fewer than {settings['min_requests']} requests is inconclusive: "
        f"{settings['on_inconclusive']}"
    )


# --- Measuring -----------------------------------------------------------------------------------


@dataclass
class Measured:
    value: float | None
    requests: float | None = None
    error: str = ""
    extra: str = ""  # the firing rules' names


@dataclass
class Judged:
    index: int
    label: str
    value: float | None
    threshold: float | None
    baseline: float | None
    requests: float | None
    verdict: str
    detail: str


def _floor_minute(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


def _window(condition: dict[str, Any], settings: dict[str, Any]) -> timedelta:
    return timedelta(seconds=float(condition.get("window", settings["window"])))


class Readings:
    """The step's own readings of each watched service's stored counts, one after each scrape round it
    ran: two of them give the exact traffic recorded in between (see the module's doc). None for a
    service whose source is a Prometheus server (its server is asked for the window instead)."""

    def __init__(self, services: list[str], now: datetime) -> None:
        self.services = services
        self.anchor = _floor_minute(now)  # every round from now on is added to minutes from here on
        self.taken: dict[str, list[tuple[float, Any]]] = {name: [] for name in services}

    def take(self, at: float) -> None:
        from monitoring.selectors import stored_counts

        for name in self.services:
            self.taken[name].append((at, stored_counts(name, self.anchor)))

    def window(self, service: str, seconds: float) -> tuple[Any, float] | None:
        """(the counts, the seconds they span) from the newest reading back to the newest one at least
        ``seconds`` older, or to the first (the step's start) when none is; None for a Prometheus source."""
        taken = self.taken[service]
        now, latest = taken[-1]
        if latest is None:
            return None
        base_at, base = taken[0]
        for at, counts in taken:
            if at <= now - seconds:
                base_at, base = at, counts
        return latest.since(base), now - base_at


def measure(condition: dict[str, Any], window: timedelta, now: datetime, readings: Readings | None = None) -> Measured:
    """The condition's figure over ``window`` ending at ``now``: from the step's readings for a scrape
    source's signal, else from the stored rollups by minute (or the Prometheus server)."""
    from monitoring.selectors import Signal, service_signal, signal_from_counts, slo_window_burn

    if readings is not None and "signal" in condition:
        found_window = readings.window(condition["service"], window.total_seconds())
        if found_window is not None:
            counts, seconds = found_window
            signal = Signal(condition["signal"])
            value = signal_from_counts(condition["service"], signal, timedelta(seconds=seconds), counts)
            return Measured(value.value, value.requests)

    if "alerts" in condition:
        from alerting.selectors import firing_rule_names

        firing = firing_rule_names(list(condition["alerts"]))
        return Measured(float(len(firing)), extra=", ".join(firing))
    if "slo" in condition:
        burn = slo_window_burn(condition["service"], condition["slo"], window, now)
        if burn is None:
            return Measured(None, error=f"the service {condition['service']} has no SLO named {condition['slo']}")
        return Measured(burn.burn_rate, burn.total, burn.error)
    found = service_signal(condition["service"], Signal(condition["signal"]), window, now)
    return Measured(found.value, found.requests, found.error)


def _live_window(
    condition: dict[str, Any], settings: dict[str, Any], now: datetime, *, since: timedelta | None = None
) -> timedelta:
    """The window as the minutes' rows can give it: from the start of the minute ``window`` ago (or, when
    ``since`` is shorter, ``since`` ago: the step's start) to now."""
    window = _window(condition, settings)
    if since is not None:
        window = min(window, since)
    return now - _floor_minute(now - window)


def baseline_of(
    condition: dict[str, Any], settings: dict[str, Any], started: datetime | None
) -> tuple[float | None, str]:
    """The previous release's figure (see the module's doc) and, when there is none to compare with, why."""
    if "baseline" not in condition or "alerts" in condition:
        return None, ""
    if started is None:
        return None, "no baseline: the deployment has no start time"
    end = _floor_minute(started)
    minutes = math.ceil(_window(condition, settings) / MINUTE)
    found = measure(condition, minutes * MINUTE, end)
    since = (end - minutes * MINUTE).strftime("%H:%M")
    if found.value is None or _too_little(condition, found, settings):
        return None, (
            f"no baseline: {since}-{end:%H:%M} (UTC) before the deployment held "
            f"{_count(found.requests)} requests, fewer than {settings['min_requests']}"
        )
    return found.value, f"baseline {_fmt(found.value, condition)} over {since}-{end:%H:%M} UTC"


def _count(requests: float | None) -> str:
    return "no" if requests is None else f"{requests:.0f}"


def _too_little(condition: dict[str, Any], found: Measured, settings: dict[str, Any]) -> bool:
    traffic = "slo" in condition or condition.get("signal") in TRAFFIC_SIGNALS
    return traffic and (found.requests or 0) < settings["min_requests"]


def bounds(condition: dict[str, Any], baseline: float | None) -> tuple[float | None, float | None]:
    """(floor, ceiling): the condition's ``min`` and ``max``, the baseline's allowance (baseline + margin,
    or - margin where lower is worse) making one of them stricter (see the module's doc)."""
    if "alerts" in condition:
        return None, 0.0
    floor = float(condition["min"]) if "min" in condition else None
    ceiling = float(condition["max"]) if "max" in condition else None
    if baseline is not None:
        margin = float(condition["baseline"]["margin"])
        if _worse_is_lower(condition):
            floor = baseline - margin if floor is None else max(floor, baseline - margin)
        else:
            ceiling = baseline + margin if ceiling is None else min(ceiling, baseline + margin)
    return floor, ceiling


def threshold_of(condition: dict[str, Any], baseline: float | None) -> float | None:
    """The bound that matters most, stored and drawn with each measurement: the floor where lower is worse."""
    floor, ceiling = bounds(condition, baseline)
    if _worse_is_lower(condition) and floor is not None:
        return floor
    return ceiling if ceiling is not None else floor


def judge(
    index: int, condition: dict[str, Any], found: Measured, baseline: float | None, settings: dict[str, Any]
) -> Judged:
    name = label(condition)
    threshold = threshold_of(condition, baseline)
    value = found.value

    def judged(verdict: str, detail: str) -> Judged:
        return Judged(index, name, value, threshold, baseline, found.requests, verdict, detail[:500])

    if "alerts" in condition:
        return judged(FAIL, f"firing: {found.extra}") if value else judged(PASS, "none firing")
    if found.requests is not None and _too_little(condition, found, settings):
        return judged(
            INCONCLUSIVE, f"{_count(found.requests)} requests in the window, fewer than {settings['min_requests']}"
        )
    if value is None:
        return judged(INCONCLUSIVE, found.error or "no data in the window (no successful scrape)")
    floor, ceiling = bounds(condition, baseline)
    if floor is None and ceiling is None:
        return judged(INCONCLUSIVE, "no baseline to compare with, and no max or min")
    shown = _fmt(value, condition)
    if ceiling is not None and value > ceiling:
        return judged(FAIL, f"{shown} > {_fmt(ceiling, condition)}")
    if floor is not None and value < floor:
        return judged(FAIL, f"{shown} < {_fmt(floor, condition)}")
    within = [
        f">= {_fmt(floor, condition)}" if floor is not None else "",
        f"<= {_fmt(ceiling, condition)}" if ceiling is not None else "",
    ]
    return judged(PASS, f"{shown} " + " and ".join(w for w in within if w))


# --- Running -------------------------------------------------------------------------------------


@dataclass
class _Streaks:
    limit: int
    counts: dict[int, int] = field(default_factory=dict)

    def add(self, index: int, breach: bool) -> int:
        self.counts[index] = self.counts.get(index, 0) + 1 if breach else 0
        return self.counts[index]


def _check_references(conditions: list[dict[str, Any]]) -> None:
    """Every service, SLO and alert rule named exists (an operator may have renamed one since the pipeline
    was saved): found at the start, not after minutes of measuring nothing."""
    from alerting.selectors import existing_rule_names
    from deployments.steps import StepFailed
    from monitoring.selectors import service_names, slo_window_burn

    services = set(service_names())
    for index, condition in enumerate(conditions):
        where = f"conditions[{index}]"
        if "alerts" in condition:
            missing = sorted(set(condition["alerts"]) - existing_rule_names(list(condition["alerts"])))
            if missing:
                raise StepFailed(f"{where}: no alert rule named {missing[0]!r}")
            continue
        if condition["service"] not in services:
            raise StepFailed(f"{where}: no service named {condition['service']!r} (Monitoring > Services)")
        if "slo" in condition and slo_window_burn(condition["service"], condition["slo"], MINUTE) is None:
            raise StepFailed(f"{where}: the service {condition['service']} has no SLO named {condition['slo']!r}")


def refresh(services: list[str], output: Callable[[str], None]) -> None:
    """One scrape round of each watched service's scrape sources now (see the module's doc)."""
    from monitoring.scrape import scrape_sources, scrape_sources_run

    for name in services:
        try:
            for result in scrape_sources_run(list(scrape_sources(service=name))):
                if result.error:
                    output(f"scrape of {name}: {result.error}\n")
        except Exception as exc:  # a scrape that fails leaves the stored figures: judged on those
            output(f"scrape of {name} failed ({type(exc).__name__}); judging the stored figures\n")


def run(step: dict[str, Any], ctx: Context, timeout: float) -> None:
    """Measure until the duration's rounds are done (pass) or a condition breaches too often (StepFailed)."""
    import time

    from deployments.steps import StepFailed

    settings = {**DEFAULTS, **step}
    conditions: list[dict[str, Any]] = step["conditions"]
    interval, duration = float(settings["interval"]), float(settings["duration"])
    policy, limit = settings["on_inconclusive"], int(settings["failure_limit"])
    if step.get("unmonitored") == "skip":
        from monitoring.selectors import service_names

        named = sorted({c["service"] for c in conditions if "service" in c})
        if named and not set(named) & set(service_names()):
            ctx.output(f"not analysed: no service named {', '.join(named)} is monitored here (unmonitored: skip)\n")
            return
    _check_references(conditions)
    services = sorted({c["service"] for c in conditions if "service" in c})
    baselines: dict[int, float | None] = {}
    for index, condition in enumerate(conditions):
        if "baseline" in condition:
            baselines[index], words = baseline_of(condition, settings, ctx.started_at)
            ctx.output(f"{label(condition)}: {words}\n")
    needed = max(1, int(duration // interval))
    ctx.output(
        f"analysing for {duration:g} s: {needed} rounds, every {interval:g} s; "
        f"{limit} breaches in a row fail; inconclusive: {policy}\n"
    )
    refresh(services, ctx.output)
    start = time.monotonic()
    readings = Readings(services, timezone.now())
    readings.take(start)  # the start: no window reaches back before it
    streaks = _Streaks(limit)
    deadline = start + timeout
    counted = rounds = 0
    judged: list[Judged] = []
    # An operator's "skip ahead" after the step's run began ends it (a guarded rollout's hold), even one made
    # while the step was still getting ready to measure.
    began = ctx.step_started_at or timezone.now()
    was_paused = False
    while True:
        next_at = start + (rounds + 1) * interval
        if ctx.skipped_since(began):
            ctx.output(f"skipped ahead by an operator after {counted} of {needed} rounds\n")
            return
        if next_at > deadline:
            still = "; ".join(f"{i.label}: {i.detail}" for i in judged if i.verdict == INCONCLUSIVE)
            raise StepFailed(
                f"inconclusive for too long: {counted} of {needed} rounds judged within the {timeout:g} s "
                f"timeout (on_inconclusive: wait); {still}"
            )
        ctx.sleep(max(0.0, next_at - time.monotonic()), skippable_since=began)
        if ctx.skipped_since(began):
            continue  # said and returned at the top of the loop
        paused = ctx.paused()  # a paused hold keeps measuring (a breach still fails it) but does not end
        if paused:
            deadline += interval
        if paused != was_paused:
            ctx.output("paused: measuring on, the hold does not end\n" if paused else "resumed\n")
            was_paused = paused
        rounds += 1
        refresh(services, ctx.output)
        readings.take(time.monotonic())
        now = timezone.now()
        elapsed = time.monotonic() - start
        judged = []
        for index, condition in enumerate(conditions):
            window = min(_window(condition, settings), timedelta(seconds=elapsed))
            if "slo" in condition:  # read from the stored minutes: the window's whole minutes, up to the step's start
                window = _live_window(condition, settings, now, since=timedelta(seconds=elapsed))
            found = measure(condition, window, now, readings)
            judged.append(judge(index, condition, found, baselines.get(index), settings))
        ctx.record(judged, now)
        waiting = False
        failure = ""
        for item in judged:
            breach = item.verdict == FAIL or (item.verdict == INCONCLUSIVE and policy == "fail")
            if item.verdict == INCONCLUSIVE and policy == "wait":
                waiting = True
                continue
            if streaks.add(item.index, breach) >= limit and not failure:
                failure = _failure(item, limit, policy)
        ctx.output(
            f"round {rounds} at {elapsed:.0f} s: "
            + "; ".join(f"{item.label} {item.verdict} ({item.detail})" for item in judged)
            + "\n"
        )
        if failure:
            raise StepFailed(failure)
        if not waiting and not paused:
            counted += 1
        if counted >= needed:
            ctx.output(f"passed: {counted} rounds judged, no condition breached {limit} times in a row\n")
            return


def _failure(item: Judged, limit: int, policy: str) -> str:
    if item.verdict == INCONCLUSIVE:
        return (
            f"{item.label} could not be judged {limit} times in a row ({item.detail}), and the step fails what "
            f"it cannot judge (on_inconclusive: {policy})"
        )
    return f"{item.label} breached {limit} times in a row: {item.detail}"
