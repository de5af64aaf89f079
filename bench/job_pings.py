"""Throughput of the job monitors' ping endpoint, as a ratio against the trivial view in the same run.

Through gunicorn on loopback (2 sync workers) under wrk -t2 -c16: GET /ping/<uuid> of one monitor (its
key looked up in the in-process copy of the keys, the ping counted and appended to the ping buffer: the
spool file on the embedded defaults, a Redis list with REDIS_URL; each worker's flush thread applies the
buffer once a second, JOB_PING_FLUSH_SECONDS) against the trivial JSON view /bench/trivial served by the
same settings, alternating rounds, median of each. The rate limit is raised for the run
(JOB_PING_RATE_PER_SECOND) so that every ping is recorded rather than answered 429; the counter is still
taken on every ping. At the end the monitor's last ping must be from the run: the pings were applied,
not only answered. Goal: pings req/s >= 0.8 of the trivial view's.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench._harness import (  # noqa: E402
    BASE_DIR,
    Load,
    bench_env,
    gunicorn,
    median_load,
    migrate,
    server_cpu_seconds,
    wrk,
)

SETTINGS = "bench._settings"
GOAL = 0.8
MONITOR = "bench-job-pings"
ENV = {"LOG_FORMAT": "json", "JOB_PING_RATE_PER_SECOND": "1000000"}


def prepare_monitor() -> str:
    """The benchmark's monitor in the benchmark database (made once); returns its ping path."""
    migrate(SETTINGS)
    code = (
        "from monitoring.models import JobMonitor\n"
        f"monitor, _ = JobMonitor.objects.get_or_create(name={MONITOR!r}, defaults={{'period_seconds': 3600}})\n"
        "print(monitor.ping_path())\n"
    )
    completed = subprocess.run(
        [sys.executable, "manage.py", "shell", "--no-imports", "-c", code],
        cwd=BASE_DIR,
        env=bench_env(DJANGO_SETTINGS_MODULE=SETTINGS, LOG_LEVEL="WARNING"),
        capture_output=True,
        text=True,
    )
    if completed.returncode != 0:
        sys.exit(f"bench: could not make the monitor:\n{completed.stderr}{completed.stdout}")
    return completed.stdout.strip().splitlines()[-1]


def last_ping_timestamp() -> float:
    """The monitor's last applied ping (seconds since the epoch; 0 when none)."""
    code = (
        "from monitoring.models import JobMonitor\n"
        f"monitor = JobMonitor.objects.get(name={MONITOR!r})\n"
        "print(monitor.last_ping.timestamp() if monitor.last_ping else 0)\n"
    )
    completed = subprocess.run(
        [sys.executable, "manage.py", "shell", "--no-imports", "-c", code],
        cwd=BASE_DIR,
        env=bench_env(DJANGO_SETTINGS_MODULE=SETTINGS, LOG_LEVEL="WARNING"),
        capture_output=True,
        text=True,
    )
    if completed.returncode != 0:
        sys.exit(f"bench: could not read the monitor:\n{completed.stderr}{completed.stdout}")
    return float(completed.stdout.strip().splitlines()[-1])


def check_ping(url: str) -> None:
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - loopback
        status, body = response.status, response.read()
    if status != 200 or body != b"OK\n":
        sys.exit(f"bench: the ping answered {status} {body!r}")


def measure(url: str, paths: dict[str, str], *, rounds: int, seconds: int) -> dict[str, list[Load]]:
    """wrk on each path of one server in turn, the order reversed every other round, with the workers' CPU."""
    results: dict[str, list[Load]] = {label: [] for label in paths}
    labels = list(paths)
    for label in labels:
        wrk(url + paths[label], seconds=2)  # warm up
    for index in range(rounds):
        for label in labels if index % 2 == 0 else labels[::-1]:
            cpu_before = server_cpu_seconds(url)
            load = wrk(url + paths[label], seconds=seconds)
            cpu_after = server_cpu_seconds(url)
            if cpu_before is not None and cpu_after is not None and load.requests:
                load.cpu_us_per_request = (cpu_after - cpu_before) / load.requests * 1e6
            results[label].append(load)
            print(f"  round {index + 1:2} {label:8} p50 {load.p50_ms:6.2f} ms  {load.requests_per_second:8,.0f} req/s")
    return results


def _cpu_us(loads: list[Load]) -> float | None:
    figures = [load.cpu_us_per_request for load in loads if load.cpu_us_per_request is not None]
    return statistics.median(figures) if figures else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="ping/trivial rounds through gunicorn")
    parser.add_argument("--seconds", type=int, default=10, help="seconds of wrk load per round")
    args = parser.parse_args()

    path = prepare_monitor()
    with gunicorn(SETTINGS, env=ENV) as url:
        check_ping(url + path)
        started = time.time()
        results = measure(url, {"trivial": "/bench/trivial", "ping": path}, rounds=args.rounds, seconds=args.seconds)
        deadline = time.monotonic() + 10
        while (applied := last_ping_timestamp()) < started and time.monotonic() < deadline:
            time.sleep(0.5)  # the flush threads apply what the last round buffered
    if applied < started:
        sys.exit("bench: the pings were answered but not applied to the monitor")
    ping: Load = median_load(results["ping"])
    trivial: Load = median_load(results["trivial"])
    ratio = ping.requests_per_second / trivial.requests_per_second
    cpu = {label: _cpu_us(loads) for label, loads in results.items()}
    cache = "Redis cache" if os.environ.get("REDIS_URL") else "file cache"
    database = "PostgreSQL" if os.environ.get("DATABASE_URL", "").startswith("postgres") else "SQLite"
    print(
        f"job monitor ping (gunicorn, 2 sync workers, {database}, {cache}): p50 {ping.p50_ms:.2f} ms, "
        f"p99 {ping.p99_ms:.2f} ms, {ping.requests_per_second:,.0f} req/s vs trivial view p50 {trivial.p50_ms:.2f} ms, "
        f"{trivial.requests_per_second:,.0f} req/s: {ratio:.2f} of its throughput (goal >= {GOAL})"
    )
    if cpu["ping"] and cpu["trivial"]:
        # The workers' own CPU per request: what is left of a ping's time is waiting on the database and cache.
        print(
            f"  gunicorn workers' CPU per request: ping {cpu['ping']:,.0f} us, trivial {cpu['trivial']:,.0f} us "
            f"({cpu['ping'] / cpu['trivial']:.2f}x)"
        )


if __name__ == "__main__":
    main()
