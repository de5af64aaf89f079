"""Cost of monitoring, each figure against a peer measured in the same run.

1. Request metrics: p50 of the trivial view /bench/trivial through gunicorn (2 sync workers, wrk -t2 -c16)
   with and without monitoring.request_metrics.RequestMetricsMiddleware, its flush thread running as in
   production (every REQUEST_METRICS_FLUSH_SECONDS=10 s). Both servers run at once and take turns under
   load (--metrics-rounds rounds, the order reversed every other round); the ratio is the median of the
   per-round ratios. Goal: p50 ratio with/without <= 1.03.

2. Readiness: /health/ready (database + cache) against django-health-check 4.8's view with its
   Database and Cache checks (/ht/, bench._healthcheck_settings), served by the same gunicorn settings
   against the same PostgreSQL (bench_monitoring) and Redis (db 13). Alternating rounds, median of each.
   Goal: p50 ratio ours/peer <= 1.0; req/s of each printed too.

3. Comprehensive checks, in process: wall time of run_checks(registered_checks(COMPREHENSIVE)) against
   its slowest check run alone (run_checks([check])), in a child process with the same database and
   cache as (2), median of 10 repetitions after a warm-up (every thread of the checks' pool connected).
   Goal: at most 20 ms more than the slowest.

PostgreSQL or Redis not answering: the embedded defaults (SQLite, file cache) are used and said so.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench._harness import (  # noqa: E402
    _LATENCY,
    _REQUESTS,
    _RPS,
    _UNIT,
    BASE_DIR,
    WRK_ARGS,
    Load,
    bench_env,
    gunicorn,
    interleaved,
    median_load,
    paired_ratio,
    redis_problem,
    require_wrk,
)

SETTINGS = "bench._settings"
PEER_SETTINGS = "bench._healthcheck_settings"
METRICS_MIDDLEWARE = "monitoring.request_metrics.RequestMetricsMiddleware"
DATABASE_NAME = "bench_monitoring"
DATABASE_URL = f"postgres://postgres@127.0.0.1:5432/{DATABASE_NAME}"
REDIS_URL = "redis://127.0.0.1:6379/13"
PEER_PATH = "/ht/"
# The peer answers HTML to */*; ask both for JSON so that both render the same kind of document.
PEER_HEADERS = {"Accept": "application/json"}
METRICS_GOAL = 1.03
READY_GOAL = 1.0
CHECKS_GOAL_MS = 20.0
WARM_UP_FAST_MS = 100.0
WARM_UP_RUNS = 40
SPREAD_WARNING = 1.3  # max/min of a series' per-round p50 above this: the machine was probably busy


# --- Backing services ----------------------------------------------------------------------------------


def postgres_problem() -> str | None:
    """None when PostgreSQL answers (creating the benchmark database if missing), else why not."""
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed"
    try:
        with psycopg.connect(
            "postgresql://postgres@127.0.0.1:5432/postgres", connect_timeout=2, autocommit=True
        ) as conn:
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DATABASE_NAME]).fetchone() is None:
                conn.execute(f"CREATE DATABASE {DATABASE_NAME}")
    except psycopg.Error as exc:
        return f"PostgreSQL on 127.0.0.1:5432 did not answer ({str(exc).strip().splitlines()[0]})"
    return None


def backing_env() -> tuple[dict[str, str], str]:
    """The environment of every server and child of this run, and a line saying what it points at."""
    env = {"LOG_FORMAT": "json", "REQUEST_METRICS_FLUSH_SECONDS": "10"}
    said = []
    problem = postgres_problem()
    if problem is None:
        env["DATABASE_URL"] = DATABASE_URL
        said.append(f"PostgreSQL {DATABASE_NAME} on 127.0.0.1:5432")
    else:
        env["DATABASE_URL"] = ""  # the embedded SQLite, whatever the environment says
        said.append(f"embedded SQLite ({problem}: FALLBACK)")
    problem = redis_problem()
    if problem is None:
        env["REDIS_URL"] = REDIS_URL
        said.append("Redis db 13 on 127.0.0.1:6379")
    else:
        env["REDIS_URL"] = ""  # the embedded file cache
        said.append(f"embedded file cache ({problem}: FALLBACK)")
    return env, ", ".join(said)


def migrate(settings_module: str, env: dict[str, str]) -> None:
    completed = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--verbosity", "0"],
        cwd=BASE_DIR,
        env=bench_env(DJANGO_SETTINGS_MODULE=settings_module, LOG_LEVEL="WARNING", **env),
        capture_output=True,
        text=True,
    )
    if completed.returncode != 0:
        sys.exit(f"bench: migrate ({settings_module}) failed:\n{completed.stderr}{completed.stdout}")


def row(label: str, load: Load) -> str:
    return f"  {label:28} p50 {load.p50_ms:6.2f} ms  p99 {load.p99_ms:7.2f} ms  {load.requests_per_second:8,.0f} req/s"


def warn_if_spread(label: str, loads: list[Load]) -> None:
    p50s = [load.p50_ms for load in loads]
    if len(p50s) > 1 and max(p50s) / min(p50s) > SPREAD_WARNING:
        print(
            f"  note: {label} p50 ranged {min(p50s):.2f}-{max(p50s):.2f} ms across rounds: "
            "probably contaminated by other load on the machine"
        )


# --- 1. Request metrics middleware -----------------------------------------------------------------


def request_metrics(rounds: int, seconds: int, env: dict[str, str]) -> None:
    variants = {
        "with request metrics": env,
        "without request metrics": {**env, "BENCH_WITHOUT": METRICS_MIDDLEWARE},
    }
    with ExitStack() as servers:
        urls = {
            label: servers.enter_context(gunicorn(SETTINGS, env=server_env)) for label, server_env in variants.items()
        }
        loads = interleaved(urls, "/bench/trivial", rounds=rounds, seconds=seconds)
    with_mw, without_mw = loads["with request metrics"], loads["without request metrics"]
    warn_if_spread("with", with_mw)
    warn_if_spread("without", without_mw)
    a, b = median_load(with_mw), median_load(without_mw)
    print(
        f"trivial view with RequestMetricsMiddleware: p50 {a.p50_ms:.2f} ms, {a.requests_per_second:,.0f} req/s "
        f"vs without: p50 {b.p50_ms:.2f} ms, {b.requests_per_second:,.0f} req/s: "
        f"p50 ratio with/without {paired_ratio(with_mw, without_mw):.3f} (goal <= {METRICS_GOAL}; median of "
        f"{rounds} per-round ratios, ratio of medians {a.p50_ms / b.p50_ms:.3f}); "
        f"throughput ratio {paired_ratio(with_mw, without_mw, 'requests_per_second'):.3f}"
    )


# --- 2. Readiness endpoint against django-health-check ----------------------------------------------


def answers_200(url: str, headers: dict[str, str]) -> None:
    request = urllib.request.Request(url, headers=headers)  # noqa: S310 - loopback
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback
            status, body = response.status, response.read(2000)
    except urllib.error.HTTPError as error:
        status, body = error.code, error.read(2000)
    if status != 200:
        sys.exit(f"bench: {url} answered {status}, expected 200: {body.decode(errors='replace')}")


_NON_2XX = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")


def wrk_counting(url: str, *, seconds: int, headers: dict[str, str]) -> tuple[Load, int, int]:
    """As the harness's wrk, but answers other than 2xx are counted instead of ending the run: the
    readiness endpoints answer 503 when a check fails under load, and that is part of the figure."""
    args = [require_wrk(), *WRK_ARGS, f"-d{seconds}s"]
    for name, value in headers.items():
        args += ["-H", f"{name}: {value}"]
    output = subprocess.run([*args, url], capture_output=True, text=True, check=True).stdout
    latency = {p: float(v) * _UNIT[u] for p, v, u in _LATENCY.findall(output)}
    failed = _NON_2XX.search(output)
    load = Load(float(_RPS.search(output).group(1)), latency["50"], latency["99"])
    return load, int(failed.group(1)) if failed else 0, int(_REQUESTS.search(output).group(1))


def readiness(rounds: int, seconds: int, env: dict[str, str]) -> None:
    ours: list[Load] = []
    peer: list[Load] = []
    failures = {"ours": [0, 0], "peer": [0, 0]}  # non-2xx answers, answers (measured rounds only)
    variants = [
        ("ours", "ours /health/ready", ours, SETTINGS, "/health/ready", {}),
        ("peer", "django-health-check /ht/", peer, PEER_SETTINGS, PEER_PATH, PEER_HEADERS),
    ]
    for index in range(rounds):
        for key, label, results, settings_module, path, headers in variants if index % 2 == 0 else variants[::-1]:
            with gunicorn(settings_module, env=env) as url:
                answers_200(url + path, headers)
                wrk_counting(url + path, seconds=2, headers=headers)  # warm up
                load, failed, total = wrk_counting(url + path, seconds=seconds, headers=headers)
                results.append(load)
                failures[key][0] += failed
                failures[key][1] += total
                print(row(label, load) + (f"  {failed:,} of {total:,} answers not 2xx" if failed else ""))
    warn_if_spread("/health/ready", ours)
    warn_if_spread("django-health-check", peer)
    a, b = median_load(ours), median_load(peer)
    print(
        f"/health/ready (database + cache): p50 {a.p50_ms:.2f} ms, p99 {a.p99_ms:.2f} ms, "
        f"{a.requests_per_second:,.0f} req/s vs django-health-check 4.8 (Database + Cache): "
        f"p50 {b.p50_ms:.2f} ms, p99 {b.p99_ms:.2f} ms, {b.requests_per_second:,.0f} req/s: "
        f"p50 ratio ours/peer {a.p50_ms / b.p50_ms:.3f} (goal <= {READY_GOAL}); "
        f"throughput {a.requests_per_second / b.requests_per_second:.1f}x the peer's"
    )
    for key, name in (("ours", "/health/ready"), ("peer", "django-health-check")):
        failed, total = failures[key]
        if failed:
            print(
                f"  WARNING: {name} answered {failed:,} of {total:,} requests under load with a non-2xx status "
                f"({failed / total:.1%}): a readiness probe that fails on a healthy server; not a pass whatever "
                "the ratio"
            )


# --- 3. Comprehensive checks in process (runs in a child process) -------------------------------------


def _timed_ms(fn: Callable[[], list[Any]]) -> tuple[float, list[Any]]:
    start = time.perf_counter()
    results = fn()
    return (time.perf_counter() - start) * 1000, results


def child(repetitions: int) -> None:
    import django

    django.setup()
    from monitoring.checks import COMPREHENSIVE, registered_checks, run_checks

    checks = registered_checks(COMPREHENSIVE)
    run_checks(registered_checks(COMPREHENSIVE))  # warm up: imports, connections
    fast = [check for check in checks if _timed_ms(lambda c=check: run_checks([c]))[0] < WARM_UP_FAST_MS]
    # The runner's pool has 32 threads, each with its own database connection, and hands work to them
    # in turn: run the fast checks enough times that every thread has connected (as in a server that
    # has been answering probes for a while), so that connecting is not what gets timed.
    for _ in range(WARM_UP_RUNS):
        run_checks(fast)

    whole: list[float] = []
    alone: dict[str, list[float]] = {check.component: [] for check in checks}
    statuses: dict[str, str] = {}
    for _ in range(repetitions):
        elapsed, _ = _timed_ms(lambda: run_checks(registered_checks(COMPREHENSIVE)))
        whole.append(elapsed)
        for check in checks:
            elapsed, (result,) = _timed_ms(lambda c=check: run_checks([c]))
            alone[check.component].append(elapsed)
            statuses[check.component] = f"{result.status}: {result.output}"
    print(
        json.dumps(
            {
                "comprehensive_ms": statistics.median(whole),
                "comprehensive_range_ms": [min(whole), max(whole)],
                "alone_ms": {name: statistics.median(times) for name, times in alone.items()},
                "statuses": statuses,
            }
        )
    )


def comprehensive(repetitions: int, env: dict[str, str]) -> None:
    command = [sys.executable, os.path.abspath(__file__), "--child", "--repetitions", str(repetitions)]
    completed = subprocess.run(
        command,
        cwd=BASE_DIR,
        env=bench_env(DJANGO_SETTINGS_MODULE=SETTINGS, LOG_LEVEL="WARNING", **env),
        capture_output=True,
        text=True,
    )
    if completed.returncode != 0:
        sys.exit(f"bench: the in-process check run failed:\n{completed.stderr}{completed.stdout}")
    r = json.loads(completed.stdout.strip().splitlines()[-1])
    for name, ms in sorted(r["alone_ms"].items(), key=lambda item: -item[1]):
        print(f"  {name:28} alone {ms:8.2f} ms  ({r['statuses'][name][:90]})")
    slowest, slowest_ms = max(r["alone_ms"].items(), key=lambda item: item[1])
    low, high = r["comprehensive_range_ms"]
    print(f"  {'comprehensive (all)':28} {r['comprehensive_ms']:8.2f} ms  (range {low:.2f}-{high:.2f} ms)")
    extra = r["comprehensive_ms"] - slowest_ms
    print(
        f"comprehensive checks in process ({len(r['alone_ms'])} checks): {r['comprehensive_ms']:.1f} ms vs slowest "
        f"single check {slowest} alone {slowest_ms:.1f} ms: {extra:+.1f} ms (goal <= +{CHECKS_GOAL_MS:.0f} ms)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="rounds through gunicorn, per figure")
    parser.add_argument("--seconds", type=int, default=10, help="seconds of wrk load per round")
    parser.add_argument("--metrics-rounds", type=int, default=10, help="interleaved rounds for request metrics")
    parser.add_argument("--metrics-seconds", type=int, default=5, help="seconds of wrk load per metrics round")
    parser.add_argument("--repetitions", type=int, default=10, help="comprehensive check runs in process")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.repetitions)
        return

    env, services = backing_env()
    print(f"backing services: {services}; load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    migrate(SETTINGS, env)
    migrate(PEER_SETTINGS, env)
    request_metrics(args.metrics_rounds, args.metrics_seconds, env)
    readiness(args.rounds, args.seconds, env)
    comprehensive(args.repetitions, env)
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
