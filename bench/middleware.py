"""Cost of the request-id and logging middleware: p50 of a trivial view through gunicorn with and
without it, measured in the same run (alternating rounds, median of each). Goal: ratio <= 1.03.

A third server logs requests with gunicorn's own access log instead (what one gets without this
middleware and still wants a line per request); its ratio is printed too."""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench._harness import gunicorn, median_load, migrate, wrk  # noqa: E402

MIDDLEWARE = "controlplane.context.RequestContextMiddleware"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10)
    args = parser.parse_args()

    migrate("bench._settings")
    with_mw, without_mw, access_log = [], [], []
    for _ in range(args.rounds):
        for label, results, env, extra in (
            ("with", with_mw, {"LOG_FORMAT": "json"}, []),
            ("without", without_mw, {"LOG_FORMAT": "json", "BENCH_WITHOUT": MIDDLEWARE}, []),
            ("access", access_log, {"LOG_FORMAT": "json", "BENCH_WITHOUT": MIDDLEWARE}, ["--access-logfile", "-"]),
        ):
            with gunicorn("bench._settings", env=env, extra_args=extra) as url:
                wrk(url + "/bench/trivial", seconds=2)  # warm up
                results.append(wrk(url + "/bench/trivial", seconds=args.seconds))
                print(f"  {label:8} p50 {results[-1].p50_ms:.2f} ms  {results[-1].requests_per_second:,.0f} req/s")
    a, b, c = median_load(with_mw), median_load(without_mw), median_load(access_log)
    print(f"trivial view, request-id + logging middleware: p50 {a.p50_ms:.2f} ms, {a.requests_per_second:,.0f} req/s")
    print(f"trivial view, without that middleware:         p50 {b.p50_ms:.2f} ms, {b.requests_per_second:,.0f} req/s")
    print(f"trivial view, gunicorn access log instead:     p50 {c.p50_ms:.2f} ms, {c.requests_per_second:,.0f} req/s")
    print(f"p50 ratio with/without: {a.p50_ms / b.p50_ms:.3f} (goal <= 1.03)")
    print(f"p50 ratio with/gunicorn access log: {a.p50_ms / c.p50_ms:.3f}")
    print(f"throughput ratio with/without: {a.requests_per_second / b.requests_per_second:.3f}")


if __name__ == "__main__":
    main()
