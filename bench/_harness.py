"""Shared by the benchmarks: start gunicorn on loopback, load it with wrk, read the figures."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

# A benchmark stopped by SIGTERM (a timeout, a CI limit) still runs its finally blocks, which stop
# the gunicorn servers it started in their own sessions.
signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(f"bench: stopped by signal {signum}"))
WRK_ARGS = ["-t2", "-c16", "--latency"]  # as the peers were measured (shared/PEERS.md)


@dataclass
class Load:
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    requests: int = 0
    cpu_us_per_request: float | None = None  # the server's workers' CPU time, where measured


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def require_wrk() -> str:
    wrk = shutil.which("wrk")
    if wrk is None:
        sys.exit("bench: wrk is missing (apt-get install wrk)")
    return wrk


def bench_env(**overrides: str) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("CONTROLPLANE_VAR_DIR", str(Path(tempfile.gettempdir()) / "controlplane-bench"))
    env["PYTHONPATH"] = str(BASE_DIR)
    env.update(overrides)
    return env


@contextmanager
def gunicorn(
    settings_module: str,
    *,
    workers: int = 2,
    env: dict[str, str] | None = None,
    extra_args: list[str] | None = None,
    log_path: Path | None = None,
) -> Iterator[str]:
    """A gunicorn with sync workers serving the control plane under ``settings_module``; yields its URL.

    Its output goes to ``log_path`` when given (kept, for the caller to read), else to a temporary file
    removed at the end."""
    port = free_port()
    if log_path is None:
        log = tempfile.NamedTemporaryFile(prefix="bench-gunicorn-", suffix=".log", delete=False)  # noqa: SIM115
    else:
        log = open(log_path, "wb")  # noqa: SIM115 - closed below, after the server stops
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "controlplane.wsgi",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            str(workers),
            "--worker-class",
            "sync",
            *(extra_args or []),
        ],  # fmt: skip
        cwd=BASE_DIR,
        env=bench_env(DJANGO_SETTINGS_MODULE=settings_module, **(env or {})),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(url + "/health/live", timeout=1)  # noqa: S310 - loopback
                break
            except urllib.error.HTTPError:
                break  # it answers
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    tail = Path(log.name).read_text(errors="replace")[-3000:]
                    sys.exit(f"bench: gunicorn did not start:\n{tail}")
                time.sleep(0.2)
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
        log.close()
        if log_path is None:
            os.unlink(log.name)  # every request logs a line: these files grow to hundreds of MB


_REQUESTS = re.compile(r"(\d+) requests in")
_LATENCY = re.compile(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", re.M)
_RPS = re.compile(r"Requests/sec:\s+([\d.]+)")
_UNIT = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def wrk_output(url: str, *, seconds: int = 10, headers: dict[str, str] | None = None, script: str | None = None) -> str:
    """wrk's report of ``seconds`` of load on ``url``, whatever the server answered."""
    args = [require_wrk(), *WRK_ARGS, f"-d{seconds}s"]
    for name, value in (headers or {}).items():
        args += ["-H", f"{name}: {value}"]
    if script:
        args += ["-s", script]
    return subprocess.run([*args, url], capture_output=True, text=True, check=True).stdout


def wrk(url: str, *, seconds: int = 10, headers: dict[str, str] | None = None, script: str | None = None) -> Load:
    output = wrk_output(url, seconds=seconds, headers=headers, script=script)
    if "Non-2xx" in output:
        sys.exit(f"bench: {url} answered errors under load:\n{output}")
    return parse_load(output)


def parse_load(output: str) -> Load:
    """The figures of a wrk report (run with --latency)."""
    latency = {p: float(v) * _UNIT[u] for p, v, u in _LATENCY.findall(output)}
    requests = int(_REQUESTS.search(output).group(1))
    return Load(float(_RPS.search(output).group(1)), latency["50"], latency["99"], requests)


def median_load(loads: list[Load]) -> Load:
    return Load(
        statistics.median(load.requests_per_second for load in loads),
        statistics.median(load.p50_ms for load in loads),
        statistics.median(load.p99_ms for load in loads),
    )


def migrate(settings_module: str) -> None:
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--verbosity", "0"],
        cwd=BASE_DIR,
        env=bench_env(DJANGO_SETTINGS_MODULE=settings_module),
        check=True,
    )


def redis_problem() -> str | None:
    """None when Redis on 127.0.0.1:6379 answers PING, else why not."""
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            reply = sock.recv(64)
    except OSError as exc:
        return f"Redis on 127.0.0.1:6379 did not answer ({exc.strerror or exc})"
    if not reply.startswith(b"+PONG"):
        return f"127.0.0.1:6379 answered {reply[:40]!r} to PING"
    return None


def interleaved(
    urls: dict[str, str], path: str, *, rounds: int, seconds: int, report: bool = True
) -> dict[str, list[Load]]:
    """wrk on each server in turn, ``rounds`` times, the order reversed every other round (A B, B A, ...).

    Every server runs for the whole measurement (an idle sync worker costs nothing), so a change in the
    machine's speed during the run (other tenants, frequency, the page cache) touches each variant alike;
    compare them pairwise with ``paired_ratio``.
    """
    results: dict[str, list[Load]] = {label: [] for label in urls}
    labels = list(urls)
    for label in labels:
        wrk(urls[label] + path, seconds=2)  # warm up
    for index in range(rounds):
        for label in labels if index % 2 == 0 else labels[::-1]:
            cpu_before = server_cpu_seconds(urls[label])
            load = wrk(urls[label] + path, seconds=seconds)
            if cpu_before is not None and load.requests:
                cpu_after = server_cpu_seconds(urls[label])
                load.cpu_us_per_request = (cpu_after - cpu_before) / load.requests * 1e6
            results[label].append(load)
            if report:
                load = results[label][-1]
                rate = f"{load.requests_per_second:8,.0f} req/s"
                print(f"  round {index + 1:2} {label:24} p50 {load.p50_ms:6.2f} ms  {rate}")
    return results


def paired_ratio(a: list[Load], b: list[Load], field: str = "p50_ms") -> float:
    """The median over rounds of a's figure over b's in the same round."""
    return statistics.median(getattr(x, field) / getattr(y, field) for x, y in zip(a, b, strict=True))


def _processes() -> dict[int, tuple[int, float, str]]:
    """pid -> (parent pid, CPU seconds used, command line) of every process this user can read."""
    tick = os.sysconf("SC_CLK_TCK")
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        found[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick, command)
    return found


def gunicorn_workers(url: str) -> list[int]:
    """Process ids of the workers of the gunicorn serving ``url`` (its master's children)."""
    bind = url.split("//", 1)[1]
    processes = _processes()
    masters = {pid for pid, (_, _, command) in processes.items() if "gunicorn" in command and bind in command}
    return sorted(pid for pid, (parent, _, _) in processes.items() if parent in masters)


def server_cpu_seconds(url: str) -> float | None:
    """CPU time used so far by the workers of the gunicorn serving ``url`` (None without /proc)."""
    if not Path("/proc/self/stat").exists():
        return None
    bind = url.split("//", 1)[1]
    processes = _processes()
    masters = {pid for pid, (_, _, command) in processes.items() if "gunicorn" in command and bind in command}
    return sum(cpu for parent, cpu, _ in processes.values() if parent in masters)
