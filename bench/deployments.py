"""Cost of running deployments, each figure as a ratio against its limit or a peer measured in the same run.

The control plane runs as it does in production: gunicorn (2 sync workers) serving the API, one Celery
worker process (``-Q <a queue of this run> --concurrency 1 --without-heartbeat --without-gossip
--without-mingle``, pool prefork by default, ``--pool solo`` to compare), PostgreSQL
``bench_deployments_cp`` on 127.0.0.1:5432 (user postgres; created and migrated here, kept between
runs), Redis on 127.0.0.1:6379 db 14 as the cache (its own key prefix) and as the broker (a queue name
of this run only). CONTROLPLANE_VAR_DIR is under the temp directory. This process makes an API token
with scope ``deploy`` and the environments below, then requests every deployment with
POST /api/deployment/deploy and polls the database until it has finished.

1. Dispatch latency: from just before the POST (wall clock, ``time.time()``) to the first step's
   ``StepRun.started_at`` as stored (the same host clock), one deployment after another (the
   environment's lock allows one at a time) of a pipeline with one quick command step
   (``{python} -c pass``). A few warm-up deployments come first (each gunicorn worker's first deploy
   request connects to the broker), reported apart. p50, p95 and max over ``--deployments`` (20).
   Limit: p50 <= 250 ms. The median split of that time is printed: the API call, the request until the
   row exists (``created_at``), from there until a worker claimed it (commit, publish, broker, worker,
   claim: ``started_at``), and the runner's bookkeeping until the first step starts.

2. Runner overhead per step: a pipeline of N = 20 command steps each running ``/bin/true``, one
   deployment timed from its stored ``started_at`` to its ``finished_at``, against the same N commands run
   by ``bash -c '/bin/true; /bin/true; ...'`` (timed around the subprocess in this process) in the same
   run; overhead per step = (ours - shell) / N. Then the same with ``{python} -c pass`` (the same
   interpreter). Rounds alternate shell, ours (``--rounds``, default 5 each); medians are compared.
   Limit: <= 30 ms per step. The median round's split is printed: bookkeeping before the first step,
   each step's stored duration, the gaps between steps, bookkeeping after the last one; and the cost of
   one PostgreSQL commit here (autocommit ``SELECT txid_current()``), since every runner write is one.

The gunicorn and worker processes are stopped in a finally block, the token revoked, this run's Redis
keys deleted; the database and its deployments stay. Exit status 0 even when a goal is missed
("MISSED" is printed); 1 when a deployment fails; 2 when PostgreSQL or Redis is missing.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench._harness import BASE_DIR, bench_env, gunicorn, redis_problem  # noqa: E402

HOST, PORT, USER = "127.0.0.1", 5432, "postgres"
CONTROL_DB = "bench_deployments_cp"
CONTROL_URL = f"postgres://{USER}@{HOST}:{PORT}/{CONTROL_DB}"
REDIS_URL = "redis://127.0.0.1:6379/14"
VAR_DIR = Path(tempfile.gettempdir()) / "controlplane-bench-deployments"
SETTINGS = "controlplane.settings"
DISPATCH_LIMIT_MS = 250.0
OVERHEAD_LIMIT_MS = 30.0
STEPS = 20
DISPATCH_ENV = "bench-dispatch"
SECOND_DISPATCH_ENV = "bench-dispatch-b"  # warm-up only
TRUE_ENV = "bench-steps-true"
PYTHON_ENV = "bench-steps-python"
PYTHON = sys.executable  # the worker runs on this interpreter too, so {python} is this path


def fail(message: str, status: int = 2) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)
    sys.exit(status)


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile (p95 of 20 values is the 19th smallest)."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(fraction * len(ordered))) - 1]


# --- Environment, before Django --------------------------------------------------------------------


def service_env(queue: str) -> dict[str, str]:
    """The variables every process of this run shares: this process, gunicorn and the worker."""
    return {
        "DJANGO_SETTINGS_MODULE": SETTINGS,
        "DJANGO_ENV": "development",
        "CONTROLPLANE_VAR_DIR": str(VAR_DIR),
        "DATABASE_URL": CONTROL_URL,
        "REDIS_URL": REDIS_URL,
        "CACHE_KEY_PREFIX": "bench-deployments",
        "CELERY_BROKER_URL": REDIS_URL,
        "CELERY_QUEUE": queue,
        "DEPLOY_SECRETS": "",
        "SENTRY_DSN": "",
        "PYTHONUNBUFFERED": "1",
    }


def admin_connection(dbname: str = "postgres") -> Any:
    import psycopg

    try:
        return psycopg.connect(host=HOST, port=PORT, user=USER, dbname=dbname, autocommit=True, connect_timeout=10)
    except psycopg.OperationalError as exc:
        fail(f"PostgreSQL at {HOST}:{PORT} (user {USER}, trust auth) does not answer: {str(exc).strip()}")
        raise  # unreachable


def ensure_database() -> None:
    from psycopg import sql

    with admin_connection() as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [CONTROL_DB]).fetchone() is None:
            conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(CONTROL_DB)))


def commit_cost_ms(count: int = 200) -> tuple[float, str]:
    """Median ms of one autocommit transaction that writes a commit record (what each runner write pays)."""
    with admin_connection(CONTROL_DB) as conn:
        setting = conn.execute("SHOW synchronous_commit").fetchone()[0]
        times = []
        for _ in range(count):
            start = time.perf_counter()
            conn.execute("SELECT txid_current()")
            times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), setting


# --- The control plane (in this process) -------------------------------------------------------------


def setup_control_plane(queue: str) -> str:
    """Django on bench_deployments_cp, migrated; the environments; a deploy token (returned)."""
    os.environ.update(service_env(queue))
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    import django

    django.setup()
    from django.core.management import call_command
    from django.utils import timezone

    from controlplane.audit import Actor
    from controlplane.services import api_token_create
    from deployments.models import ACTIVE, Deployment, DeploymentStatus
    from deployments.services import environment_save, pipeline_save

    call_command("migrate", verbosity=0)
    actor = Actor.system("bench/deployments.py")
    quick = [{"name": "quick", "kind": "command", "argv": ["{python}", "-c", "pass"]}]
    true_steps = [{"name": f"true-{i + 1}", "kind": "command", "argv": ["/bin/true"]} for i in range(STEPS)]
    python_steps = [
        {"name": f"python-{i + 1}", "kind": "command", "argv": ["{python}", "-c", "pass"]} for i in range(STEPS)
    ]
    environments = (
        (DISPATCH_ENV, quick),
        (SECOND_DISPATCH_ENV, quick),
        (TRUE_ENV, true_steps),
        (PYTHON_ENV, python_steps),
    )
    for name, steps in environments:
        pipeline = pipeline_save(name=f"{name}-pipeline", steps=steps, actor=actor)
        environment_save(name=name, pipeline=pipeline, actor=actor)
    # An interrupted earlier run may have left one active (its worker and queue are gone): free the locks.
    Deployment.objects.filter(environment__name__in=[name for name, _ in environments], status__in=list(ACTIVE)).update(
        status=DeploymentStatus.CANCELLED, finished_at=timezone.now(), error="bench: left by an interrupted run"
    )
    _, token = api_token_create(name=f"bench-deployments {queue}", scopes=["deploy"], actor=actor)
    return token


def revoke(token: str) -> None:
    from controlplane.audit import Actor
    from controlplane.models import ApiToken
    from controlplane.services import api_token_revoke

    row = ApiToken.objects.filter(token_hash=ApiToken.hash(token)).first()
    if row is not None:
        api_token_revoke(token=row, actor=Actor.system("bench/deployments.py"))


@contextmanager
def celery_worker(queue: str, pool: str) -> Iterator[Path]:
    """One Celery worker process on ``queue`` with the shared environment; yields its log's path."""
    log = Path(tempfile.mkstemp(prefix="bench-deployments-worker-", suffix=".log")[1])
    command = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "controlplane",
        "worker",
        "-Q",
        queue,
        "--pool",
        pool,
        "--concurrency",
        "1",
        "--hostname",
        f"{queue}@%h",
        "--loglevel",
        "INFO",
        "--without-heartbeat",
        "--without-gossip",
        "--without-mingle",
    ]  # fmt: skip
    with log.open("w") as out:
        process = subprocess.Popen(
            command,
            cwd=BASE_DIR,
            env=bench_env(**service_env(queue)),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 60
        while " ready." not in log.read_text(errors="replace"):
            if process.poll() is not None or time.monotonic() > deadline:
                fail(f"the Celery worker did not start:\n{log.read_text(errors='replace')[-3000:]}", 1)
            time.sleep(0.1)
        yield log
    finally:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=30)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.unlink(missing_ok=True)


def forget_queue(queue: str) -> None:
    """Delete this run's broker keys (its queue, bindings naming it) from Redis db 14."""
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        for key in client.scan_iter(match=f"*{queue}*"):
            client.delete(key)
        for key in client.scan_iter(match="_kombu.binding.*"):
            if client.type(key) == b"set":
                stale = [member for member in client.smembers(key) if queue.encode() in member]
                if stale:
                    client.srem(key, *stale)
    finally:
        client.close()


# --- Requests --------------------------------------------------------------------------------------


def request_deploy(url: str, token: str, environment: str, version: str) -> tuple[int, float, float]:
    """POST /api/deployment/deploy; returns the deployment's id, t0 (just before) and the answer's time."""
    request = urllib.request.Request(  # noqa: S310 - loopback
        url + "/api/deployment/deploy",
        data=json.dumps({"environment": environment, "version": version}).encode(),
        method="POST",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
    )
    t0 = time.time()
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - loopback
            answer = json.loads(response.read())
    except urllib.error.HTTPError as error:
        fail(f"POST /api/deployment/deploy answered {error.code}: {error.read()[:1000]!r}", 1)
    return answer["id"], t0, time.time()


def wait_finished(deployment_id: int, worker_log: Path, timeout: float = 120) -> Any:
    """Poll the database until the deployment has finished; it must have succeeded."""
    from deployments.models import FINISHED, Deployment, DeploymentStatus

    deadline = time.monotonic() + timeout
    while True:
        status = Deployment.objects.filter(pk=deployment_id).values_list("status", flat=True).first()
        if status in FINISHED:
            break
        if time.monotonic() > deadline:
            fail(
                f"deployment #{deployment_id} is still {status} after {timeout:g} s:\n{worker_log.read_text()[-3000:]}",
                1,
            )
        time.sleep(0.05)  # the figures come from stored timestamps: polling faster only loads the CPUs
    deployment = Deployment.objects.get(pk=deployment_id)
    if deployment.status != DeploymentStatus.SUCCEEDED:
        lines = "\n".join(str(line) for line in deployment.log_lines.all())
        fail(f"deployment #{deployment_id} {deployment.status}: {deployment.error}\n{lines}", 1)
    return deployment


def forward_runs(deployment: Any) -> list[Any]:
    from deployments.models import Phase

    return list(deployment.step_runs.filter(phase=Phase.FORWARD).order_by("index"))


# --- 1. Dispatch latency -----------------------------------------------------------------------------


def _sample(deployment: Any, t0: float, answered: float) -> dict[str, float]:
    first = forward_runs(deployment)[0]
    return {
        "total": (first.started_at.timestamp() - t0) * 1000,
        "api": (answered - t0) * 1000,
        "created": (deployment.created_at.timestamp() - t0) * 1000,
        "claimed": (deployment.started_at - deployment.created_at).total_seconds() * 1000,
        "runner": (first.started_at - deployment.started_at).total_seconds() * 1000,
    }


def _split(sample: dict[str, float]) -> str:
    return (
        f"API call answered after {sample['api']:.1f} ms; row created_at at +{sample['created']:.1f} ms; "
        f"created_at -> claimed (commit, publish, broker, worker, claim) {sample['claimed']:.1f} ms; "
        f"claimed -> first step start (runner bookkeeping) {sample['runner']:.1f} ms"
    )


def warm_up(url: str, token: str, worker_log: Path, run_id: str, rounds: int) -> list[float]:
    """Two requests at once to two environments, so that each gunicorn sync worker serves one (a worker's
    first deploy request imports the tasks and connects to the broker); returns the latencies seen."""
    from concurrent.futures import ThreadPoolExecutor

    seen = []
    with ThreadPoolExecutor(2) as pool:
        for index in range(rounds):
            futures = [
                pool.submit(request_deploy, url, token, name, f"{run_id}-warmup-{index}")
                for name in (DISPATCH_ENV, SECOND_DISPATCH_ENV)
            ]
            for future in futures:
                deployment_id, t0, answered = future.result()
                seen.append(_sample(wait_finished(deployment_id, worker_log), t0, answered)["total"])
    return seen


def dispatch(url: str, token: str, worker_log: Path, run_id: str, count: int, warmup: int) -> dict[str, Any]:
    cold = warm_up(url, token, worker_log, run_id, warmup)
    samples: list[dict[str, float]] = []
    for index in range(count):
        deployment_id, t0, answered = request_deploy(url, token, DISPATCH_ENV, f"{run_id}-dispatch-{index}")
        samples.append(_sample(wait_finished(deployment_id, worker_log), t0, answered))
    totals = [s["total"] for s in samples]
    median = {key: statistics.median(s[key] for s in samples) for key in ("api", "created", "claimed", "runner")}
    if warmup:
        print(
            f"  warm-up ({warmup} rounds of 2 requests at once, the second waits for the worker; not counted): "
            + ", ".join(f"{ms:.0f}" for ms in cold)
            + " ms"
        )
    print("  each (ms): " + " ".join(f"{ms:.0f}" for ms in totals))
    print(f"  median split: {_split(median)}")
    print(f"  slowest: {max(totals):.1f} ms: {_split(max(samples, key=lambda s: s['total']))}")
    return {
        "p50": statistics.median(totals),
        "p95": percentile(totals, 0.95),
        "max": max(totals),
        "count": len(totals),
    }


# --- 2. Runner overhead per step ---------------------------------------------------------------------


def shell_time(command: str) -> float:
    script = "; ".join([command] * STEPS)
    start = time.perf_counter()
    subprocess.run(["bash", "-c", script], check=True)
    return time.perf_counter() - start


def our_time(url: str, token: str, worker_log: Path, environment: str, version: str) -> tuple[float, dict]:
    deployment_id, _, _ = request_deploy(url, token, environment, version)
    deployment = wait_finished(deployment_id, worker_log)
    runs = forward_runs(deployment)
    if len(runs) != STEPS:
        fail(f"deployment #{deployment_id} ran {len(runs)} steps, expected {STEPS}", 1)
    seconds = (deployment.finished_at - deployment.started_at).total_seconds()
    durations = [(r.finished_at - r.started_at).total_seconds() * 1000 for r in runs]
    gaps = [(b.started_at - a.finished_at).total_seconds() * 1000 for a, b in zip(runs, runs[1:], strict=False)]
    split = {
        "before": (runs[0].started_at - deployment.started_at).total_seconds() * 1000,
        "step": statistics.median(durations),
        "gap": statistics.median(gaps),
        "after": (deployment.finished_at - runs[-1].finished_at).total_seconds() * 1000,
        "log_lines": deployment.log_lines.count(),
    }
    return seconds, split


def overhead(url: str, token: str, worker_log: Path, run_id: str, rounds: int, label: str) -> dict[str, Any]:
    environment, command = {"true": (TRUE_ENV, "/bin/true"), "python": (PYTHON_ENV, f"{PYTHON} -c pass")}[label]
    shell, ours, splits = [], [], []
    our_time(url, token, worker_log, environment, f"{run_id}-{label}-warmup")  # not counted
    shell_time(command)
    for index in range(rounds):
        shell.append(shell_time(command))
        seconds, split = our_time(url, token, worker_log, environment, f"{run_id}-{label}-{index}")
        ours.append(seconds)
        splits.append(split)
        print(
            f"  round {index + 1}: shell {shell[-1] * 1000:7.1f} ms   ours {ours[-1] * 1000:7.1f} ms   "
            f"per step {(ours[-1] - shell[-1]) / STEPS * 1000:6.2f} ms over",
            flush=True,
        )
    middle = splits[ours.index(statistics.median_low(ours))]
    shell_median, ours_median = statistics.median(shell), statistics.median(ours)
    print(
        f"  median round's split: {middle['before']:.1f} ms before the first step; each step {middle['step']:.1f} ms "
        f"stored (the shell: {shell_median / STEPS * 1000:.1f} ms a command); {middle['gap']:.1f} ms between steps; "
        f"{middle['after']:.1f} ms after the last; {middle['log_lines']} log lines stored"
    )
    return {
        "command": command,
        "shell": shell_median,
        "ours": ours_median,
        "per_step_ms": (ours_median - shell_median) / STEPS * 1000,
    }


# --- Report ----------------------------------------------------------------------------------------


def table(rows: list[tuple[str, str, str, float | None, str]]) -> None:
    print()
    print(f"{'figure':58} {'ours':>10} {'peer/limit':>11} {'ratio':>7}  goal")
    for label, ours, peer, ratio, goal in rows:
        if ratio is None:
            print(f"{label:58} {ours:>10} {peer:>11} {'':>7}  (no goal)")
        else:
            verdict = "met" if ratio <= 1.0 else "MISSED"
            print(f"{label:58} {ours:>10} {peer:>11} {ratio:7.3f}  {goal}  {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--deployments", type=int, default=20, help="deployments timed for the dispatch latency")
    parser.add_argument("--warmup", type=int, default=2, help="warm-up rounds of 2 deployments (not counted)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating shell/ours rounds per command")
    parser.add_argument("--pool", choices=("prefork", "solo"), default="prefork", help="the worker's pool")
    parser.add_argument("--skip-python", action="store_true", help="only /bin/true for the runner overhead")
    args = parser.parse_args()
    if args.deployments < 1 or args.rounds < 1:
        parser.error("--deployments and --rounds must be at least 1")

    reason = redis_problem()
    if reason is not None:
        fail(reason)
    admin_connection().close()  # the server answers, or a clear message
    ensure_database()
    os.chdir(BASE_DIR)
    run_id = uuid.uuid4().hex[:10]
    queue = f"bench-deployments-{run_id}"
    token = setup_control_plane(queue)
    commit_ms, synchronous_commit = commit_cost_ms()
    print(
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; PostgreSQL {CONTROL_DB}, "
        f"one commit {commit_ms:.2f} ms (synchronous_commit={synchronous_commit}); broker and cache {REDIS_URL}, "
        f"queue {queue}; worker pool {args.pool}, concurrency 1; gunicorn 2 sync workers"
    )
    results: dict[str, Any] = {}
    web_env = {k: v for k, v in service_env(queue).items() if k != "DJANGO_SETTINGS_MODULE"}  # gunicorn() sets it
    try:
        with celery_worker(queue, args.pool) as worker_log, gunicorn(SETTINGS, env=web_env) as url:
            print(f"\n1. dispatch latency: POST /api/deployment/deploy -> first step's started_at ({args.deployments})")
            results["dispatch"] = dispatch(url, token, worker_log, run_id, args.deployments, args.warmup)
            labels = ["true"] if args.skip_python else ["true", "python"]
            for number, label in enumerate(labels, start=2):
                command = "/bin/true" if label == "true" else "{python} -c pass"
                print(
                    f"\n{number}. runner overhead: {STEPS} steps of {command}, deployment started_at -> finished_at "
                    f"vs bash -c running the same {STEPS} commands ({args.rounds} alternating rounds)"
                )
                results[label] = overhead(url, token, worker_log, run_id, args.rounds, label)
    finally:
        revoke(token)
        forget_queue(queue)

    d = results["dispatch"]
    rows: list[tuple[str, str, str, float | None, str]] = [
        (
            f"dispatch latency p50, API call -> first step ({d['count']})",
            f"{d['p50']:.1f} ms",
            f"{DISPATCH_LIMIT_MS:.0f} ms",
            d["p50"] / DISPATCH_LIMIT_MS,
            "<= 1",
        ),
        ("dispatch latency p95", f"{d['p95']:.1f} ms", f"{DISPATCH_LIMIT_MS:.0f} ms", None, ""),
        ("dispatch latency max", f"{d['max']:.1f} ms", f"{DISPATCH_LIMIT_MS:.0f} ms", None, ""),
    ]
    for label in ("true", "python"):
        if label not in results:
            continue
        r = results[label]
        name = "/bin/true" if label == "true" else "python -c pass"
        rows.append(
            (
                f"{STEPS}-step deployment of {name} vs bash running them",
                f"{r['ours'] * 1000:.1f} ms",
                f"{r['shell'] * 1000:.1f} ms",
                None,
                "",
            )
        )
        rows.append(
            (
                f"runner overhead per step ({name})",
                f"{r['per_step_ms']:.2f} ms",
                f"{OVERHEAD_LIMIT_MS:.0f} ms",
                r["per_step_ms"] / OVERHEAD_LIMIT_MS,
                "<= 1",
            )
        )
    table(rows)
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
