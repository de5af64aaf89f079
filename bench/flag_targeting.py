"""In-process cost of the targeting engine (flags.targeting), as ratios against a limit and a peer
measured in the same run.

1. A flag with three constraints (IN on a property, SEMVER_GTE on the app version, STR_ENDS_WITH on
   the e-mail, case-insensitive) in a 50 % flexibleRollout with two weighted variants, for users
   who match the constraints (so every constraint, the bucket and the variant hash run):
   µs per ``evaluate`` against the 3 µs limit of issue 18.
2. A simple flag (today's model: 50 % rollout, one named user) through ``FlagDefinition.simple``
   against today's rule (``flags.evaluation.evaluate`` of the same flag), same users, same run: the
   engine's fast path (``_fast_path``) must keep the ratio at most SIMPLE_GOAL. The two are timed in
   alternation and the ratio is the median of the per-round ratios (a busy machine slows both).
3. For scale: the same simple flag through the general path (fast path off: what the fast path
   saves) and with ``explain=True`` (what the "why is this user on" page pays).

Median of REPEATS runs of N calls each; the contexts are built before timing (OFREP builds one per
request, not per flag). Pure Python: no Django, no database.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from flags import evaluation  # noqa: E402
from flags.targeting import (  # noqa: E402
    Constraint,
    Context,
    FlagDefinition,
    Strategy,
    Variant,
    evaluate,
)

LIMIT_US = 3.0
SIMPLE_GOAL = 1.2  # "as fast as today": ratio engine / today's rule at most this
REPEATS = 7


def targeted_flag() -> FlagDefinition:
    constraints = (
        Constraint("plan", "IN", values=("premium", "business")),
        Constraint("appVersion", "SEMVER_GTE", value="2.3.0"),
        Constraint("email", "STR_ENDS_WITH", values=("@example.eu",), case_insensitive=True),
    )
    variants = (Variant("classic", "classic-model", weight=50), Variant("coach", "coach-model", weight=50))
    return FlagDefinition(
        name="coaching_model",
        type="string",
        strategies=(
            Strategy.flexible_rollout(50, group_id="coaching_model", constraints=constraints, variants=variants),
        ),
    )


def once_us(fn: Callable[[], None], calls: int) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) / calls * 1e6


def median_us(fn: Callable[[], None], calls: int) -> float:
    return statistics.median(once_us(fn, calls) for _ in range(REPEATS))


def paired_us(first: Callable[[], None], second: Callable[[], None], calls: int) -> tuple[float, float, float]:
    """Median µs of each, and the median of second / first over rounds timed back to back."""
    a, b = [], []
    for _ in range(REPEATS):
        a.append(once_us(first, calls))
        b.append(once_us(second, calls))
    return statistics.median(a), statistics.median(b), statistics.median(y / x for x, y in zip(a, b, strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=100_000)
    args = parser.parse_args()
    n = args.calls

    flag = targeted_flag()
    contexts = [
        Context(user_id=f"user-{i}", properties={"plan": "premium", "appVersion": "2.4.1", "email": f"u{i}@Example.EU"})
        for i in range(n)
    ]
    assert all(evaluate(flag, c).enabled or evaluate(flag, c).reason == "SPLIT" for c in contexts[:100])

    def run_targeted() -> None:
        for c in contexts:
            evaluate(flag, c)

    simple_old = evaluation.CompiledFlag(
        name="weekly_progress_digest", enabled=True, rollout_percent=50, targeting_keys=frozenset({"vip"})
    )
    simple_new = FlagDefinition.simple(
        "weekly_progress_digest", enabled=True, rollout_percent=50, targeting_keys={"vip"}
    )
    keys = [f"user-{i}" for i in range(n)]
    key_contexts = [Context(user_id=k) for k in keys]
    assert all(
        evaluation.evaluate(simple_old, k)[0] == evaluate(simple_new, c).enabled
        for k, c in zip(keys, key_contexts, strict=True)
    )

    def run_old() -> None:
        for k in keys:
            evaluation.evaluate(simple_old, k)

    def run_new() -> None:
        for c in key_contexts:
            evaluate(simple_new, c)

    def run_explained() -> None:
        for c in key_contexts:
            evaluate(simple_new, c, explain=True)

    simple_general = FlagDefinition.simple(
        "weekly_progress_digest", enabled=True, rollout_percent=50, targeting_keys={"vip"}
    )
    object.__setattr__(simple_general, "_fast", None)  # the general path, for scale

    def run_general() -> None:
        for c in key_contexts:
            evaluate(simple_general, c)

    targeted = median_us(run_targeted, n)
    old, new, ratio = paired_us(run_old, run_new, n)
    general = median_us(run_general, n)
    explained = median_us(run_explained, n)
    verdict = "ok" if ratio <= SIMPLE_GOAL else "OVER"
    limit_verdict = "ok" if targeted <= LIMIT_US else "OVER"
    print(
        f"3 constraints + 2 variants: {targeted:.2f} µs/eval = {targeted / LIMIT_US:.2f} of the "
        f"{LIMIT_US} µs limit ({limit_verdict})"
    )
    print(f"simple flag, engine:        {new:.2f} µs/eval")
    print(f"simple flag, today's rule:  {old:.2f} µs/eval")
    print(f"engine / today's rule:      {ratio:.2f} (goal: at most {SIMPLE_GOAL}; {verdict})")
    print(f"simple flag, general path:  {general:.2f} µs/eval = {general / new:.1f}x the fast path")
    print(f"simple flag with explain:   {explained:.2f} µs/eval = {explained / new:.1f}x without")


if __name__ == "__main__":
    main()
