"""Cost of the request-id and logging middleware: p50 of a trivial view through gunicorn with and
without it, measured in the same run. Goal: ratio <= 1.03.

The servers (2 sync workers each, wrk -t2 -c16 as the peers were measured) all run at once and take
turns under load, the order reversed every other round; the ratio is the median of the per-round ratios,
so a change in the machine's speed during the run touches both sides alike.

Two more servers show where the cost lies: one with the middleware but its request line off
(LOG_LEVEL=WARNING: the request id alone), and one without the middleware that logs requests with
gunicorn's own access log instead (what one gets without it and still wants a line per request). The
CPU time the workers spend per request is read from /proc around each run."""

from __future__ import annotations

import argparse
import os
import statistics
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
        "with, request line off": ({"LOG_FORMAT": "json", "LOG_LEVEL": "WARNING"}, []),
        "gunicorn access log": ({"LOG_FORMAT": "json", "BENCH_WITHOUT": MIDDLEWARE}, ["--access-logfile", "-"]),
    }
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    with ExitStack() as servers:
        urls = {
            label: servers.enter_context(gunicorn("bench._settings", env=env, extra_args=extra))
            for label, (env, extra) in variants.items()
        }
        loads = interleaved(urls, "/bench/trivial", rounds=args.rounds, seconds=args.seconds)
    for label in variants:
        load = median_load(loads[label])
        cpu = [x.cpu_us_per_request for x in loads[label] if x.cpu_us_per_request is not None]
        cpu_text = f", workers' CPU {statistics.median(cpu):.1f} us/request" if cpu else ""
        print(f"trivial view, {label:24} p50 {load.p50_ms:.2f} ms, {load.requests_per_second:,.0f} req/s{cpu_text}")
    with_, without, access = loads["with"], loads["without"], loads["gunicorn access log"]
    line_off = loads["with, request line off"]
    print(
        f"p50 ratio with/without: {paired_ratio(with_, without):.3f} (goal <= {GOAL}; "
        f"median of {args.rounds} per-round ratios)"
    )
    print(f"p50 ratio with the request line off/without: {paired_ratio(line_off, without):.3f}")
    print(f"p50 ratio with/gunicorn access log: {paired_ratio(with_, access):.3f}")
    cpu = {label: [x.cpu_us_per_request for x in loads[label]] for label in variants}
    if all(None not in values for values in cpu.values()):

        def extra(a: str, b: str) -> float:
            return statistics.median(x - y for x, y in zip(cpu[a], cpu[b], strict=True))

        print(
            f"workers' CPU per request over 'without': middleware {extra('with', 'without'):+.1f} us, of which the "
            f"request line {extra('with', 'with, request line off'):+.1f} us; gunicorn's access log line "
            f"{extra('gunicorn access log', 'without'):+.1f} us"
        )
    print(f"throughput ratio with/without: {paired_ratio(with_, without, 'requests_per_second'):.3f}")
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
