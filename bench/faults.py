"""Fault drill: the production layout on real servers, each server broken in turn, one line per fault.

The layout: gunicorn from deploy/gunicorn.conf.py (2 sync workers), a Celery worker and beat, on
PostgreSQL 127.0.0.1:5432 (a private database ``faultbench_<pid>``, migrated here), a private
redis-server on a free port (the cache) and RabbitMQ 127.0.0.1:5672 (a queue of its own), each reached
through a ``tests.faultproxy.FaultProxy`` so that only the path breaks, never the shared servers.
Beat's intervals are 1/6 of production's (heartbeat 5 s, checks 10 s, worker heartbeat 3 s, reaper
5 s), so that 30 s of silent beat here stand for 3 minutes in production.

The load is wrk -t2 -c16 on POST /ofrep/v1/evaluate/flags (the 14 flags of flags/fixtures/wingmanmatch.json,
a flags:read token). Before each fault the same load runs 10 s without a fault: its req/s and p99 are
that fault's peer (on a shared machine the speed drifts within minutes). A prober asks OFREP (one flag)
and /health/ready ten times a second throughout. The faults, each under that load:

1. the cache refusing (15 s); a flag toggled through the API meanwhile must reach every worker;
2. the cache accepting connections and never answering (15 s); the same toggle;
3. the database refusing (20 s); one gunicorn worker is stopped (SIGTERM) meanwhile, so a fresh
   process starts during the outage and must answer from its copy on disk; a toggle is attempted;
4. the broker refusing (30 s) with a deploy of the demo environment requested; once healed it must
   be sent again and run to success;
5. beat stopped (30 s, kept stopped until "celery beat silent" fires, at most 3 minutes), then
   started: the alert must fire, then resolve (Alert rows read with a manage.py shell one-liner);
6. a backup's connection cut mid-dump (a target on ``faultbench_<pid>_src`` through a proxy, big
   enough that its dump takes seconds): the backup must end ``failed`` with the real error, and the
   next backup must start at once and succeed.

Each line: OFREP requests answered, 5xx, socket errors, p99 and req/s against the peer, the time from
heal to the first 200 (OFREP, /health/ready, or the work in question), and what accepted work was lost.
The goal line: no OFREP 5xx in any fault, nothing accepted lost, every alert raised during the drill
resolved. The exit status is 0 even when a goal is missed ("MISSED" is printed); 2 when a server or
tool it needs is missing.

Everything it starts is stopped and the private databases and queue are removed at the end, on
Ctrl-C and on an error too. ``--keep`` keeps the logs (the path is printed).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench._harness import (  # noqa: E402
    BASE_DIR,
    Load,
    free_port,
    gunicorn,
    gunicorn_workers,
    parse_load,
    require_wrk,
    wrk_output,
)
from tests.faultproxy import FaultProxy  # noqa: E402

PG = ("127.0.0.1", 5432)
RABBIT = ("127.0.0.1", 5672)
PG_ADMIN_URL = "postgres://postgres@127.0.0.1:5432/postgres"
FIXTURE = BASE_DIR / "flags" / "fixtures" / "wingmanmatch.json"
TOGGLED_FLAG = "ai_coach_chat"  # 100 % rollout: its value for any key is whether it is enabled
TARGETING_KEY = "user-123"
SOURCE_ENV = "FAULTBENCH_SOURCE_URL"
SOURCE_TARGET = "faultsource"
SOURCE_ROWS = 400_000  # about 150 MiB: pg_dump -Fc through the proxy takes seconds
ACTOR = "bench/faults.py"
# 1/6 of production's intervals (30 s, 60 s, 15 s, 15 s).
INTERVALS = {
    "HEARTBEAT_INTERVAL_SECONDS": "5",
    "HEALTH_CHECK_INTERVAL_SECONDS": "10",
    "WORKER_HEARTBEAT_SECONDS": "3",
    "DEPLOY_REAPER_INTERVAL_SECONDS": "5",
}
BEAT_ALERT = "celery beat silent"
BEAT_FIRE_LIMIT = 150 / 6  # "fires within about 2.5 minutes of beat stopping", at 1/6 of the intervals
PROPAGATION_STREAK = 20  # probe answers in a row with the new value: every worker has it

# Stopped in reverse order at exit, whatever happened (Ctrl-C, an error, SIGTERM via the harness).
_cleanups: list[tuple[str, Callable[[], None]]] = []


def on_exit(label: str, action: Callable[[], None]) -> None:
    _cleanups.append((label, action))


def clean_up() -> None:
    while _cleanups:
        label, action = _cleanups.pop()
        try:
            action()
        except Exception as exc:  # noqa: BLE001 - every other clean-up still runs
            print(f"  clean-up: {label} failed: {exc}", file=sys.stderr)


atexit.register(clean_up)


# --- Servers and processes --------------------------------------------------------------------------


def pg_admin(sql: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql)


def pg_query(dbname: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(f"postgres://postgres@127.0.0.1:5432/{dbname}", autocommit=True, connect_timeout=5) as conn:
        cursor = conn.execute(sql, params)
        return cursor.fetchall() if cursor.description else []


def create_database(name: str) -> None:
    pg_admin(f'CREATE DATABASE "{name}"')
    on_exit(f"drop database {name}", lambda: pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def fill_source(name: str) -> None:
    """Rows of text whose dump takes seconds: a backup that can be cut in the middle."""
    pg_query(name, "CREATE TABLE messages (id bigint PRIMARY KEY, sent_at timestamptz NOT NULL, body text NOT NULL)")
    pg_query(
        name,
        "INSERT INTO messages SELECT g, now() - g * interval '1 minute', "
        "md5(g::text) || repeat(md5((g * 7)::text), 8) FROM generate_series(1, %s) g",
        (SOURCE_ROWS,),
    )


def start_redis(folder: Path) -> int:
    binary = shutil.which("redis-server")
    assert binary is not None
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(folder)],
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    on_exit("stop redis-server", lambda: stop_process(process))
    import redis

    for _ in range(100):
        try:
            redis.Redis(port=port).ping()
            return port
        except redis.ConnectionError:
            time.sleep(0.05)
    raise RuntimeError("the private redis-server did not start")


def stop_process(process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """SIGTERM to the process group it leads (it was started in a session of its own), then SIGKILL."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def proxy(host_port: tuple[str, int], label: str) -> FaultProxy:
    fault_proxy = FaultProxy(*host_port)
    on_exit(f"close the {label} proxy", fault_proxy.close)
    return fault_proxy


def delete_queue(broker_url: str, queue: str) -> None:
    from kombu import Connection

    with Connection(broker_url, connect_timeout=5) as conn:
        conn.default_channel.queue_delete(queue)


@dataclass
class Layout:
    """Where everything is: the environment every process of the layout gets, and what the bench reads directly."""

    folder: Path
    database: str
    source: str
    queue: str
    redis_port: int
    db_proxy: FaultProxy
    cache_proxy: FaultProxy
    broker_proxy: FaultProxy
    source_proxy: FaultProxy
    secret_key: str = field(default_factory=lambda: secrets.token_urlsafe(60))

    def env(self, *, direct: bool = False) -> dict[str, str]:
        """The production settings of the layout; ``direct``: past the proxies (the bench's own commands,
        which must see the truth while a path is broken)."""
        db = f"127.0.0.1:{PG[1]}" if direct else self.db_proxy.address
        cache = f"127.0.0.1:{self.redis_port}" if direct else self.cache_proxy.address
        broker = f"127.0.0.1:{RABBIT[1]}" if direct else self.broker_proxy.address
        env = dict(os.environ)
        env.update(
            {
                "PYTHONPATH": str(BASE_DIR),
                "PYTHONUNBUFFERED": "1",
                "DJANGO_SETTINGS_MODULE": "controlplane.settings",
                "DJANGO_ENV": "production",
                "SECRET_KEY": self.secret_key,
                "ALLOWED_HOSTS": "127.0.0.1,localhost",
                "SECURE_SSL_REDIRECT": "false",  # plain HTTP on loopback, as behind nginx
                "CONTROLPLANE_VAR_DIR": str(self.folder / "var"),
                "DATABASE_URL": f"postgres://postgres@{db}/{self.database}",
                "REDIS_URL": f"redis://{cache}/0",
                "CELERY_BROKER_URL": f"amqp://guest:guest@{broker}//",
                "CELERY_QUEUE": self.queue,
                SOURCE_ENV: f"postgres://postgres@{self.source_proxy.address}/{self.source}",
                "WEB_CONCURRENCY": "2",
                "LOG_FORMAT": "json",
                **INTERVALS,
            }
        )
        for name in ("SENTRY_DSN", "BACKUP_DIR", "BACKUP_TMP_DIR", "PROMETHEUS_MULTIPROC_DIR"):
            env.pop(name, None)
        return env

    def manage(self, *args: str, check: bool = True) -> str:
        """``manage.py`` against the private database, past the proxies; its last line of output."""
        env = {**self.env(direct=True), "LOG_LEVEL": "ERROR"}
        completed = subprocess.run(
            [sys.executable, "manage.py", *args], cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=120
        )
        if check and completed.returncode != 0:
            raise RuntimeError(f"manage.py {args[0]} failed:\n{completed.stderr[-3000:]}{completed.stdout[-1000:]}")
        lines = completed.stdout.strip().splitlines()
        return lines[-1] if lines else ""

    def shell(self, code: str) -> Any:
        """A manage.py shell one-liner that prints one JSON value."""
        return json.loads(self.manage("shell", "--no-imports", "-c", code))

    def start(self, label: str, argv: list[str], *, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        log = (self.folder / f"{label}.log").open("ab")
        process = subprocess.Popen(
            argv,
            cwd=BASE_DIR,
            env=env or self.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        on_exit(f"stop {label}", lambda: stop_process(process))
        return process

    def start_worker(self) -> subprocess.Popen[bytes]:
        # As deploy/systemd/controlplane-worker.service starts it (the prefork pool).
        host = f"faultbench-{os.getpid()}@%h"
        return self.start(
            "worker", [sys.executable, "-m", "celery", "-A", "controlplane", "worker", "--loglevel", "INFO", "-n", host]
        )

    def start_beat(self) -> subprocess.Popen[bytes]:
        schedule = str(self.folder / "var" / "celerybeat-schedule")
        return self.start(
            "beat", [sys.executable, "-m", "celery", "-A", "controlplane", "beat", "--loglevel", "INFO", "-s", schedule]
        )


# --- Load and probes --------------------------------------------------------------------------------

STATUS_LUA = """
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) ok = 0; c4xx = 0; c5xx = 0; other = 0 end
function response(status, headers, body)
  if status >= 500 then c5xx = c5xx + 1
  elseif status >= 400 then c4xx = c4xx + 1
  elseif status >= 200 and status < 300 then ok = ok + 1
  else other = other + 1 end
end
function done(summary, latency, requests)
  local t = {ok = 0, c4xx = 0, c5xx = 0, other = 0}
  for _, thread in ipairs(threads) do
    for name, _ in pairs(t) do t[name] = t[name] + thread:get(name) end
  end
  local e = summary.errors
  io.write(string.format("faultbench: 2xx=%d 4xx=%d 5xx=%d other=%d socket=%d timeout=%d\\n",
    t.ok, t.c4xx, t.c5xx, t.other, e.connect + e.read + e.write, e.timeout))
end
"""
_COUNTS = re.compile(r"faultbench: 2xx=(\d+) 4xx=(\d+) 5xx=(\d+) other=(\d+) socket=(\d+) timeout=(\d+)")


@dataclass
class LoadResult:
    load: Load
    ok: int
    c4xx: int
    c5xx: int
    socket_errors: int

    @property
    def answered(self) -> int:
        return self.ok + self.c4xx + self.c5xx


def ofrep_script(token: str, folder: Path) -> str:
    body = json.dumps({"context": {"targetingKey": TARGETING_KEY}})
    lua = (
        'wrk.method = "POST"\n'
        f"wrk.body = {json.dumps(body)}\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
        f'wrk.headers["Authorization"] = "Bearer {token}"\n' + STATUS_LUA
    )
    path = folder / "ofrep.lua"
    path.write_text(lua)
    return str(path)


def load_ofrep(url: str, script: str, seconds: int) -> LoadResult:
    output = wrk_output(url + "/ofrep/v1/evaluate/flags", seconds=seconds, script=script)
    counts = _COUNTS.search(output)
    if counts is None:
        raise RuntimeError(f"wrk printed no status counts:\n{output}")
    ok, c4xx, c5xx, other, sockets, timeouts = (int(value) for value in counts.groups())
    try:
        load = parse_load(output)
    except (AttributeError, KeyError):  # nothing answered: no latency lines
        load = Load(0.0, float("nan"), float("nan"), 0)
    return LoadResult(load, ok, c4xx + other, c5xx, sockets + timeouts)


class Background(threading.Thread):
    """``load_ofrep`` in a thread: the fault is made and healed while it runs."""

    def __init__(self, url: str, script: str, seconds: int) -> None:
        super().__init__(daemon=True)
        self.args_ = (url, script, seconds)
        self.result: LoadResult | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = load_ofrep(*self.args_)
        except BaseException as exc:  # noqa: BLE001 - reported by finish()
            self.error = exc

    def finish(self) -> LoadResult:
        self.join()
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


@dataclass
class Sample:
    at: float
    ofrep: int | None  # HTTP status, None: no answer
    value: Any
    ready: int | None


class Prober(threading.Thread):
    """OFREP (one flag) and /health/ready, each asked about ten times a second on a new connection."""

    def __init__(self, url: str, token: str) -> None:
        super().__init__(daemon=True)
        self.url, self.token = url, token
        self.samples: list[Sample] = []
        self.stopped = threading.Event()

    def _ofrep(self) -> tuple[int | None, Any]:
        request = urllib.request.Request(  # noqa: S310 - loopback
            f"{self.url}/ofrep/v1/evaluate/flags/{TOGGLED_FLAG}",
            data=json.dumps({"context": {"targetingKey": TARGETING_KEY}}).encode(),
            method="POST",
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {self.token}"},
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - loopback
                return response.status, json.loads(response.read()).get("value")
        except urllib.error.HTTPError as exc:
            return exc.code, None
        except OSError:
            return None, None

    def _ready(self) -> int | None:
        try:
            with urllib.request.urlopen(self.url + "/health/ready", timeout=5) as response:  # noqa: S310
                return response.status
        except urllib.error.HTTPError as exc:
            return exc.code
        except OSError:
            return None

    def run(self) -> None:
        while not self.stopped.is_set():
            at = time.time()
            status, value = self._ofrep()
            self.samples.append(Sample(at, status, value, self._ready()))
            self.stopped.wait(0.1)

    def stop(self) -> None:
        self.stopped.set()
        self.join(timeout=15)

    def between(self, start: float, end: float) -> list[Sample]:
        return [sample for sample in self.samples if start <= sample.at <= end]

    def first_ok_after(self, heal: float, what: str) -> float | None:
        """Seconds from ``heal`` to the first 200 of ``what`` ("ofrep" or "ready") asked after it."""
        for sample in self.samples:
            if sample.at >= heal and getattr(sample, what) == 200:
                return sample.at - heal
        return None

    def value_everywhere(self, since: float, expected: Any) -> float | None:
        """Seconds from ``since`` to the first of PROPAGATION_STREAK answers in a row with ``expected``."""
        streak_start, streak = None, 0
        for sample in self.samples:
            if sample.at < since or sample.ofrep != 200:
                continue
            if sample.value == expected:
                streak_start = streak_start if streak else sample.at
                streak += 1
                if streak >= PROPAGATION_STREAK:
                    return streak_start - since
            else:
                streak, streak_start = 0, None
        return None


# --- The drill -------------------------------------------------------------------------------------


@dataclass
class Outcome:
    name: str
    load: LoadResult | None = None
    peer: LoadResult | None = None  # the same load without a fault, just before
    ofrep_recovery: str = ""
    lost: int = 0  # accepted pieces of work lost (or stuck)
    accepted: int = 0
    notes: list[str] = field(default_factory=list)
    extra_5xx: int = 0  # 5xx answers to the drill's own API calls (a toggle, a deploy)


class Drill:
    def __init__(self, layout: Layout, url: str, tokens: dict[str, str], script: str, peer_seconds: int) -> None:
        self.layout, self.url, self.tokens, self.script = layout, url, tokens, script
        self.peer_seconds = peer_seconds
        self.outcomes: list[Outcome] = []
        self.alert_windows: list[tuple[str, float, float]] = []

    # -- helpers --

    def api(self, method: str, path: str, token: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
        request = urllib.request.Request(  # noqa: S310 - loopback
            self.url + path,
            data=json.dumps(body).encode() if body is not None else None,
            method=method,
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310 - loopback
                return response.status, json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as exc:
            try:
                return exc.code, json.loads(exc.read() or b"{}")
            except ValueError:
                return exc.code, {}

    def toggle(self, enabled: bool) -> tuple[int, float]:
        status, _ = self.api("POST", f"/api/deployment/features/{TOGGLED_FLAG}/toggle", self.tokens["write"], {
            "enabled": enabled
        })  # fmt: skip
        return status, time.time()

    def under_load(
        self,
        outcome: Outcome,
        seconds: int,
        break_: Callable[[], None],
        heal: Callable[[], None],
        during: Callable[[float], None] | None = None,
        after: int = 5,
    ) -> tuple[Prober, float, float]:
        """wrk for ``seconds`` with the fault made at its start and healed at its end, then ``after``
        seconds more under the prober. Returns the prober (still running) and the break and heal times."""
        prober = Prober(self.url, self.tokens["read"])
        prober.start()
        outcome.peer = load_ofrep(self.url, self.script, self.peer_seconds)  # the same, without a fault, first
        load = Background(self.url, self.script, seconds)
        load.start()
        broken_at = time.time()
        break_()
        if during is not None:
            during(broken_at)
        outcome.load = load.finish()
        healed_at = time.time()
        heal()
        time.sleep(after)
        ofrep_failed = any(s.ofrep != 200 for s in prober.between(broken_at, healed_at + after))
        back = prober.first_ok_after(healed_at, "ofrep")
        ready_failed = any(s.ready != 200 for s in prober.between(broken_at, healed_at))
        ready_back = prober.first_ok_after(healed_at, "ready")
        ofrep_part = (
            f"OFREP {back:.1f} s after heal" if ofrep_failed and back is not None
            else "OFREP not back" if ofrep_failed else "OFREP never failed"
        )  # fmt: skip
        ready_part = (
            "/health/ready not back" if ready_back is None
            else f"/health/ready {ready_back:.1f} s after heal ({'not ready' if ready_failed else 'ready'} during)"
        )  # fmt: skip
        outcome.ofrep_recovery = f"{ofrep_part}, {ready_part}"
        return prober, broken_at, healed_at

    def check_toggle(self, outcome: Outcome, prober: Prober, status: int, at: float, expected: bool) -> None:
        """A toggle accepted during a fault must reach every worker once healed (within 15 s)."""
        if status >= 500:
            outcome.extra_5xx += 1
        if status != 200:
            outcome.notes.append(f"toggle during the fault refused with {status} (not accepted)")
            return
        outcome.accepted += 1
        deadline = time.time() + 15
        seen = prober.value_everywhere(at, expected)
        while seen is None and time.time() < deadline:
            time.sleep(0.5)
            seen = prober.value_everywhere(at, expected)
        if seen is None:
            outcome.lost += 1
            outcome.notes.append("toggle accepted during the fault NOT served by every worker 15 s after heal: LOST")
        else:
            outcome.notes.append(f"toggle accepted during the fault served by every worker {seen:.1f} s after it")

    # -- the faults --

    def cache(self, mode: str, seconds: int, enabled: bool) -> None:
        proxy_ = self.layout.cache_proxy
        outcome = Outcome(f"cache {'refusing' if mode == 'refuse' else 'hanging'} {seconds} s")
        toggled: list[tuple[int, float]] = []

        def during(broken_at: float) -> None:
            time.sleep(3)
            toggled.append(self.toggle(enabled))

        prober, broken_at, _ = self.under_load(outcome, seconds, getattr(proxy_, mode), proxy_.heal, during)
        self.check_toggle(outcome, prober, *toggled[0], enabled)
        prober.stop()
        self.finish(outcome, broken_at)

    def database(self, seconds: int) -> None:
        outcome = Outcome(f"database refusing {seconds} s")
        proxy_ = self.layout.db_proxy
        log = self.layout.folder / "gunicorn.log"
        toggled: list[tuple[int, float]] = []

        def during(broken_at: float) -> None:
            time.sleep(4)
            before = gunicorn_workers(self.url)
            log_size = log.stat().st_size
            os.kill(before[0], signal.SIGTERM)  # one worker; the master forks a fresh one
            killed_at = time.time()
            fresh = None
            while fresh is None and time.time() < killed_at + 15:
                time.sleep(0.1)
                now = gunicorn_workers(self.url)
                fresh = next((pid for pid in now if pid not in before), None)
            if fresh is None:
                outcome.notes.append(f"no fresh worker within 15 s of stopping {before[0]}")
            else:
                started = time.time() - killed_at
                time.sleep(3)
                disk = sum(1 for line in _read_from(log, log_size) if "copy kept on disk" in line)
                outcome.notes.append(
                    f"worker {before[0]} stopped, fresh worker {fresh} up {started:.1f} s later, during the outage "
                    f"({disk} 'serving the copy kept on disk' log lines)"
                )
            toggled.append(self.toggle(False))

        prober, broken_at, _ = self.under_load(outcome, seconds, proxy_.refuse, proxy_.heal, during)
        self.check_toggle(outcome, prober, *toggled[0], False)
        prober.stop()
        self.finish(outcome, broken_at)

    def broker(self, seconds: int) -> None:
        outcome = Outcome(f"broker refusing {seconds} s, deploy requested")
        proxy_ = self.layout.broker_proxy
        answer: dict[str, Any] = {}

        def during(broken_at: float) -> None:
            time.sleep(2)
            started = time.time()
            status, body = self.api(
                "POST", "/api/deployment/deploy", self.tokens["deploy"], {"environment": "demo", "version": "v-fault"}
            )
            answer.update(status=status, body=body, took=time.time() - started)

        prober, broken_at, healed_at = self.under_load(outcome, seconds, proxy_.refuse, proxy_.heal, during, after=1)
        prober.stop()
        status, body = answer["status"], answer["body"]
        if status >= 500:
            outcome.extra_5xx += 1
        if status != 202:
            outcome.notes.append(f"deploy refused with {status}: {body}")
        else:
            outcome.accepted += 1
            outcome.notes.append(
                f"deploy #{body['id']} answered 202 in {answer['took']:.1f} s, dispatched={body.get('dispatched')}"
            )
            final, running_at = self.follow_deployment(body["id"], timeout=150)
            if final.get("status") == "succeeded":
                sent = f"running {running_at - healed_at:.1f} s after heal, " if running_at else ""
                finished = _timestamp(final["finishedAt"]) - healed_at
                outcome.notes.append(f"{sent}succeeded {finished:.1f} s after heal (reaper every 5 s)")
                outcome.ofrep_recovery += f", deploy succeeded {finished:.1f} s after heal"
            else:
                outcome.lost += 1
                outcome.notes.append(
                    f"deploy ended {final.get('status')} ({final.get('error') or final.get('dispatchError')}): LOST"
                )
        self.finish(outcome, broken_at)

    def follow_deployment(self, deployment_id: int, timeout: float) -> tuple[dict[str, Any], float | None]:
        """The deployment once finished (or as it is after ``timeout``), and when it was first seen running."""
        deadline, running_at, body = time.time() + timeout, None, {}
        while time.time() < deadline:
            status, body = self.api("GET", f"/api/deployment/deployments/{deployment_id}", self.tokens["deploy"])
            state = body.get("status") if status == 200 else None
            if state == "running" and running_at is None:
                running_at = time.time()
            if state in ("succeeded", "failed", "rolled_back", "rollback_failed", "cancelled"):
                return body, running_at
            time.sleep(0.5)
        body = dict(body)
        body["status"] = f"still {body.get('status')} after {timeout:.0f} s"
        return body, running_at

    def beat(self, beat: subprocess.Popen[bytes], seconds: int, limit: int) -> subprocess.Popen[bytes]:
        outcome = Outcome(f"beat stopped {seconds} s")
        alerts_code = _alerts_code(BEAT_ALERT)
        # One opened by an earlier fault (the broker's: beat's heartbeat could not be sent) closes first.
        wait_until(
            f"an earlier '{BEAT_ALERT}' alert did not resolve",
            lambda: all(a["resolved"] for a in self.layout.shell(alerts_code)),
            90,
        )
        prober = Prober(self.url, self.tokens["read"])
        prober.start()
        outcome.peer = load_ofrep(self.url, self.script, self.peer_seconds)  # the same, without a fault, first
        load = Background(self.url, self.script, seconds)
        load.start()
        stopped_at = time.time()
        stop_process(beat)
        fired_at = None
        while fired_at is None and time.time() < stopped_at + limit:
            fired = [a for a in self.layout.shell(alerts_code) if a["fired"] and a["started"] >= stopped_at - 1]
            if fired:
                fired_at = fired[0]["fired"]
                continue
            time.sleep(2)
        outcome.load = load.finish()
        while time.time() < stopped_at + seconds:
            time.sleep(0.5)
        restarted_at = time.time()
        beat = self.layout.start_beat()
        outcome.name = f"beat stopped {restarted_at - stopped_at:.0f} s"
        resolved_at = None
        if fired_at is not None:
            while resolved_at is None and time.time() < restarted_at + 120:
                time.sleep(2)
                mine = [a for a in self.layout.shell(alerts_code) if a["started"] >= stopped_at - 1]
                if mine and all(a["resolved"] for a in mine):
                    resolved_at = max(a["resolved"] for a in mine)
        prober.stop()
        if any(s.ofrep != 200 for s in prober.samples):
            outcome.ofrep_recovery = "OFREP failed during the drill"
        else:
            outcome.ofrep_recovery = "OFREP never failed"
        outcome.accepted = 1  # the alert is the work here
        if fired_at is None:
            outcome.lost = 1
            outcome.notes.append(f"'{BEAT_ALERT}' did NOT fire within {limit} s of beat stopping: MISSED")
        else:
            fire = fired_at - stopped_at
            outcome.notes.append(
                f"'{BEAT_ALERT}' fired {fire:.0f} s after beat stopped ({fire / BEAT_FIRE_LIMIT:.2f} of the "
                f"{BEAT_FIRE_LIMIT:.0f} s limit)"
            )
            if resolved_at is None:
                outcome.lost = 1
                outcome.notes.append("NOT resolved within 120 s of beat's restart: MISSED")
            else:
                outcome.ofrep_recovery += f", alert resolved {resolved_at - restarted_at:.0f} s after beat restarted"
                outcome.notes.append(f"resolved {resolved_at - restarted_at:.0f} s after beat restarted")
        self.finish(outcome, stopped_at)
        return beat

    def backup(self, seconds: int) -> None:
        outcome = Outcome("backup connection cut mid-dump")
        layout = self.layout
        prober = Prober(self.url, self.tokens["read"])
        prober.start()
        outcome.peer = load_ofrep(self.url, self.script, self.peer_seconds)  # the same, without a fault, first
        load = Background(self.url, self.script, seconds)
        load.start()
        started_at = time.time()
        request = (
            "import json\nfrom backups.models import BackupTarget\nfrom backups.services import backup_request\n"
            "from controlplane.audit import Actor\n"
            f"print(json.dumps(backup_request(target=BackupTarget.objects.get(name={SOURCE_TARGET!r}), "
            f"actor=Actor.system({ACTOR!r}))))"
        )
        sent = layout.shell(request)
        outcome.accepted += 1
        outcome.ofrep_recovery = "none: the backup never got to the cut"
        first = self.wait_backup(after_id=0, timeout=60)
        dumping_since = self.wait_dumping(timeout=30) if first else None
        if first is None or dumping_since is None:
            outcome.lost += 1
            outcome.notes.append(f"the requested backup (sent={sent}) never started dumping within 60 s: LOST")
            outcome.load = load.finish()
            prober.stop()
            self.finish(outcome, started_at)
            return
        time.sleep(max(0.0, dumping_since + 1.0 - time.time()))  # a second into the dump
        still_dumping = self.dumping()
        layout.source_proxy.cut()
        cut_at = time.time()
        row = self.wait_backup_end(first[0], timeout=60)
        if row is None or row[1] == "running":
            outcome.lost += 1
            outcome.notes.append(f"backup #{first[0]} still running 60 s after the cut: STUCK")
        elif row[1] == "failed":
            error = " ".join((row[2] or "").split())
            outcome.notes.append(
                f"backup #{first[0]} failed {row[4].timestamp() - cut_at:.1f} s after the cut"
                f"{'' if still_dumping else ' (the dump had ended before the cut)'}: {error[:160]!r}"
            )
        else:
            outcome.lost += 1 if row[1] != "succeeded" else 0
            outcome.notes.append(f"backup #{first[0]} ended {row[1]} although its connection was cut")
        layout.shell(request)  # as soon as the first one ended (or gave up waiting for it)
        asked_at = time.time()  # sent: the shell has returned
        outcome.accepted += 1
        second = self.wait_backup(after_id=first[0], timeout=30)
        if second is None:
            outcome.lost += 1
            outcome.notes.append("the next backup did not start within 30 s: STUCK")
        else:
            begun = max(0.0, second[3].timestamp() - asked_at)
            done = self.wait_backup_end(second[0], timeout=120)
            state = done[1] if done else "running"
            took = f" (its dump {done[5] / 1000:.1f} s, uncut)" if done and done[5] else ""
            outcome.notes.append(f"next backup #{second[0]} started {begun:.1f} s after it was sent, {state}{took}")
            outcome.ofrep_recovery = f"next backup started {begun:.1f} s after it was sent"
            if state == "succeeded" and done:
                outcome.ofrep_recovery += f", succeeded {done[4].timestamp() - cut_at:.1f} s after the cut"
            else:
                outcome.lost += 1
        outcome.load = load.finish()
        prober.stop()
        if any(s.ofrep != 200 for s in prober.samples):
            outcome.ofrep_recovery += "; OFREP failed meanwhile"
        self.finish(outcome, started_at)

    def backups(self) -> list[tuple[Any, ...]]:
        return pg_query(
            self.layout.database,
            "SELECT b.id, b.status, b.error, b.started_at, b.finished_at, b.duration_ms FROM backups_backup b "
            "JOIN backups_backuptarget t ON t.id = b.target_id WHERE t.name = %s ORDER BY b.id",
            (SOURCE_TARGET,),
        )

    def wait_backup(self, *, after_id: int, timeout: float) -> tuple[Any, ...] | None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            rows = [row for row in self.backups() if row[0] > after_id]
            if rows:
                return rows[0]
            time.sleep(0.1)
        return None

    def wait_backup_end(self, backup_id: int, *, timeout: float) -> tuple[Any, ...] | None:
        deadline = time.time() + timeout
        row = None
        while time.time() < deadline:
            row = next(row for row in self.backups() if row[0] == backup_id)
            if row[1] != "running":
                return row
            time.sleep(0.2)
        return row

    def dumping(self) -> bool:
        """Whether pg_dump is streaming the table's rows (its COPY runs) in the source database."""
        rows = pg_query(
            "postgres",
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND application_name = 'controlplane-backups' "
            "AND state = 'active' AND query LIKE 'COPY %%'",
            (self.layout.source,),
        )
        return rows[0][0] > 0

    def wait_dumping(self, *, timeout: float) -> float | None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.dumping():
                return time.time()
            time.sleep(0.05)
        return None

    # -- report --

    def finish(self, outcome: Outcome, started_at: float) -> None:
        self.outcomes.append(outcome)
        self.alert_windows.append((outcome.name, started_at, time.time()))
        print(format_line(outcome), flush=True)


def _alerts_code(rule: str | None = None) -> str:
    where = f".filter(rule__name={rule!r})" if rule else ""
    return (
        "import json\nfrom alerting.models import Alert\n"
        "ts = lambda t: t.timestamp() if t else None\n"
        "print(json.dumps([{'rule': a.rule.name, 'component': a.component, 'state': a.state, "
        "'started': ts(a.started_at), 'fired': ts(a.fired_at), 'resolved': ts(a.resolved_at)} "
        f"for a in Alert.objects.select_related('rule'){where}.order_by('started_at')]))"
    )


def _read_from(path: Path, offset: int) -> list[str]:
    with path.open("rb") as handle:
        handle.seek(offset)
        return handle.read().decode(errors="replace").splitlines()


def _timestamp(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso).timestamp()


def format_line(outcome: Outcome) -> str:
    parts = [f"{outcome.name}:"]
    if outcome.load is not None:
        load = outcome.load
        peer = outcome.peer
        assert peer is not None
        rps = load.load.requests_per_second / peer.load.requests_per_second
        p99 = load.load.p99_ms / peer.load.p99_ms
        parts.append(
            f"OFREP {load.answered:,} answered, {load.c5xx} 5xx, {load.socket_errors} socket errors, "
            f"p99 {load.load.p99_ms:.0f} ms ({p99:.2f}x the {peer.load.p99_ms:.0f} ms without the fault just before), "
            f"{load.load.requests_per_second:,.0f} req/s ({rps:.2f} of {peer.load.requests_per_second:,.0f});"
        )
    parts.append(f"recovery: {outcome.ofrep_recovery};")
    lost = "none" if outcome.lost == 0 else f"{outcome.lost} of {outcome.accepted}"
    parts.append(f"lost: {lost}" + (f" ({'; '.join(outcome.notes)})" if outcome.notes else ""))
    return " ".join(parts)


# --- Setting up --------------------------------------------------------------------------------------


def problems() -> list[str]:
    found = []
    for tool in ("wrk", "redis-server", "pg_dump"):
        if shutil.which(tool) is None:
            found.append(f"{tool} is not installed")
    try:
        pg_admin("SELECT 1")
    except Exception as exc:  # noqa: BLE001 - reported
        found.append(f"PostgreSQL on 127.0.0.1:5432 does not answer ({str(exc).splitlines()[0]})")
    try:
        from kombu import Connection

        with Connection(f"amqp://guest:guest@{RABBIT[0]}:{RABBIT[1]}//", connect_timeout=3) as conn:
            conn.ensure_connection(max_retries=1, timeout=3)
    except Exception as exc:  # noqa: BLE001 - reported
        found.append(f"RabbitMQ on 127.0.0.1:5672 does not answer ({exc})")
    return found


def wait_until(what: str, test: Callable[[], bool], timeout: float) -> None:
    deadline = time.time() + timeout
    while not test():
        if time.time() > deadline:
            raise RuntimeError(f"{what} within {timeout:.0f} s")
        time.sleep(0.5)


def ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/health/ready", timeout=5) as response:  # noqa: S310 - loopback
            return response.status == 200
    except OSError:
        return False


def prepare(layout: Layout) -> dict[str, str]:
    layout.manage("migrate", "--verbosity", "0")
    layout.manage("import_flags", str(FIXTURE))
    layout.manage("ensure_demo_environment")
    target = (
        "import json\nfrom backups.services import target_create\nfrom controlplane.audit import Actor\n"
        f"t = target_create(data={{'name': {SOURCE_TARGET!r}, 'url_env': {SOURCE_ENV!r}, 'enabled': False}}, "
        f"actor=Actor.system({ACTOR!r}))\nprint(json.dumps(t.pk))"
    )
    layout.shell(target)
    tokens = {}
    for label, scopes in (("read", "flags:read"), ("write", "flags:write"), ("deploy", "deploy")):
        tokens[label] = layout.manage("create_api_token", f"faultbench-{label}", "--scopes", scopes)
    return tokens


def run(args: argparse.Namespace) -> None:
    pid = os.getpid()
    folder = Path(tempfile.mkdtemp(prefix=f"faultbench-{pid}-"))
    if args.keep:
        on_exit("say where the logs are", lambda: print(f"logs kept in {folder}"))
    else:
        on_exit("remove the scratch folder", lambda: shutil.rmtree(folder, ignore_errors=True))
    database, source, queue = f"faultbench_{pid}", f"faultbench_{pid}_src", f"faultbench-{pid}"
    setup_started = time.time()
    create_database(database)
    create_database(source)
    fill_source(source)
    redis_port = start_redis(folder)
    layout = Layout(
        folder=folder,
        database=database,
        source=source,
        queue=queue,
        redis_port=redis_port,
        db_proxy=proxy(PG, "database"),
        cache_proxy=proxy(("127.0.0.1", redis_port), "cache"),
        broker_proxy=proxy(RABBIT, "broker"),
        source_proxy=proxy(PG, "backup source"),
    )
    on_exit(f"delete queue {queue}", lambda: delete_queue(f"amqp://guest:guest@{RABBIT[0]}:{RABBIT[1]}//", queue))
    tokens = prepare(layout)
    script = ofrep_script(tokens["read"], folder)
    layout.start_worker()
    beat = layout.start_beat()
    with gunicorn(
        "controlplane.settings",
        workers=2,
        env={key: value for key, value in layout.env().items() if key != "DJANGO_SETTINGS_MODULE"},
        extra_args=["-c", "deploy/gunicorn.conf.py"],
        log_path=folder / "gunicorn.log",
    ) as url:
        wait_until("the control plane was not ready", lambda: ready(url), 60)
        workers_alive = "import json\nfrom monitoring.watchdog import workers_alive\nprint(json.dumps(workers_alive()))"
        wait_until("no Celery worker recorded a heartbeat", lambda: layout.shell(workers_alive), 90)
        print(
            f"  set up in {time.time() - setup_started:.0f} s (database {database}, queue {queue}, logs {folder}); "
            f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
        )

        load_ofrep(url, script, 2)  # warm up
        drill = Drill(layout, url, tokens, script, args.peer)
        drill.cache("refuse", args.cache, enabled=False)
        drill.cache("hang", args.cache, enabled=True)
        drill.database(args.database)
        drill.broker(args.broker)
        beat = drill.beat(beat, args.beat, args.beat_limit)
        drill.backup(10)
        summary(drill, layout)


def summary(drill: Drill, layout: Layout) -> None:
    # Give alerts opened by the last faults a couple of check rounds to resolve.
    deadline = time.time() + 40
    alerts = layout.shell(_alerts_code())
    while any(not a["resolved"] for a in alerts) and time.time() < deadline:
        time.sleep(3)
        alerts = layout.shell(_alerts_code())
    raised = [a for a in alerts if a["fired"]]
    for alert in raised:
        during = next((name for name, start, end in drill.alert_windows if start - 1 <= alert["started"] <= end), None)
        state = "NOT RESOLVED"
        if alert["resolved"]:
            state = f"resolved {alert['resolved'] - alert['fired']:.0f} s after it fired"
        print(f"  alert '{alert['rule']}' ({alert['component']}) fired during {during or 'set-up'}: {state}")
    if raised:
        print("  (the checks run at 1/6 of production's intervals: a 20 s outage looks like 2 minutes to them)")
    faults = len(drill.outcomes)
    with_5xx = [o for o in drill.outcomes if (o.load and o.load.c5xx)]
    clean = faults - len(with_5xx)
    accepted = sum(o.accepted for o in drill.outcomes)
    lost = sum(o.lost for o in drill.outcomes)
    resolved = sum(1 for a in raised if a["resolved"])
    beat_fired = any(a["rule"] == BEAT_ALERT for a in raised)
    measured = [o for o in drill.outcomes if o.load and o.peer]
    throughput = [o.load.load.requests_per_second / o.peer.load.requests_per_second for o in measured]
    p99 = max(o.load.load.p99_ms / o.peer.load.p99_ms for o in measured)
    met = not with_5xx and lost == 0 and resolved == len(raised) and beat_fired
    print(
        f"goals: no OFREP 5xx in {clean}/{faults} faults (goal {faults}/{faults}); accepted work lost {lost} of "
        f"{accepted} (goal 0); alerts raised and resolved {resolved}/{len(raised)} (goal all; '{BEAT_ALERT}' "
        f"{'raised' if beat_fired else 'NOT raised'}); OFREP throughput under faults {min(throughput):.2f}-"
        f"{max(throughput):.2f} of no-fault, p99 up to {p99:.2f}x: {'MET' if met else 'MISSED'}"
    )
    if any(o.extra_5xx for o in drill.outcomes):
        print(f"  the drill's own API calls got {sum(o.extra_5xx for o in drill.outcomes)} 5xx answers (see notes)")
    print(f"  load average at the end {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (figures are noisy above 2)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--peer", type=int, default=10, help="seconds of OFREP load without a fault before each")
    parser.add_argument("--cache", type=int, default=15, help="seconds of each cache fault")
    parser.add_argument("--database", type=int, default=20, help="seconds of the database refusing")
    parser.add_argument("--broker", type=int, default=30, help="seconds of the broker refusing")
    parser.add_argument("--beat", type=int, default=30, help="seconds beat is stopped at least")
    parser.add_argument("--beat-limit", type=int, default=180, help="seconds beat stays stopped waiting for the alert")
    parser.add_argument("--keep", action="store_true", help="keep the logs")
    args = parser.parse_args()
    require_wrk()
    found = problems()
    if found:
        print(f"fault drill: skipped, {'; '.join(found)}")
        sys.exit(2)
    started = time.time()
    try:
        run(args)
    except KeyboardInterrupt:
        print("fault drill: interrupted")
        sys.exit(130)
    finally:
        clean_up()
        print(f"  drill took {time.time() - started:.0f} s, cleaned up")


if __name__ == "__main__":
    main()
