"""Cost of the request-id and logging middleware: p50 of a trivial view through gunicorn with and
without it, measured in the same run. Goal: ratio <= 1.03.

The servers (2 sync workers each, wrk -t2 -c16 as the peers were measured) all run at once and take
turns under load, the order reversed every other round; the ratio is the median of the per-round ratios,
so a change in the machine's speed during the run touches both sides alike.

A third server logs requests with gunicorn's own access log instead (what one gets without this
middleware and still wants a line per request); its ratio is printed too."""

from __future__ import annotations

import argparse
import os
import sys
from contextlib import ExitStack

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench._harness import gunicorn, interleaved, median_load, migrate, paired_ratio  # noqa: E402

MIDDLEWARE = "controlplane.context.RequestContextMiddleware"
GOAL = 1.03


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--seconds", type=int, default=5)
    args = parser.parse_args()

    migrate("bench._settings")
    variants = {
        "with": ({"LOG_FORMAT": "json"}, []),
        "without": ({"LOG_FORMAT": "json", "BENCH_WITHOUT": MIDDLEWARE}, []),
        "gunicorn access log": ({"LOG_FORMAT": "json", "BENCH_WITHOUT": MIDDLEWARE}, ["--access-logfile", "-"]),
    }
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    with ExitStack() as servers:
        urls = {
            label: servers.enter_context(gunicorn("bench._settings", env=env, extra_args=extra))
            for label, (env, extra) in variants.items()
        }
        loads = interleaved(urls, "/bench/trivial", rounds=args.rounds, seconds=args.seconds)
    a, b, c = (median_load(loads[label]) for label in variants)
    print(f"trivial view, request-id + logging middleware: p50 {a.p50_ms:.2f} ms, {a.requests_per_second:,.0f} req/s")
    print(f"trivial view, without that middleware:         p50 {b.p50_ms:.2f} ms, {b.requests_per_second:,.0f} req/s")
    print(f"trivial view, gunicorn access log instead:     p50 {c.p50_ms:.2f} ms, {c.requests_per_second:,.0f} req/s")
    with_, without, access = loads["with"], loads["without"], loads["gunicorn access log"]
    print(
        f"p50 ratio with/without: {paired_ratio(with_, without):.3f} (goal <= {GOAL}; "
        f"median of {args.rounds} per-round ratios; ratio of medians {a.p50_ms / b.p50_ms:.3f})"
    )
    print(f"p50 ratio with/gunicorn access log: {paired_ratio(with_, access):.3f}")
    print(f"throughput ratio with/without: {paired_ratio(with_, without, 'requests_per_second'):.3f}")
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
