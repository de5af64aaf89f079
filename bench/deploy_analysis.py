"""How fast a deploy's analysis catches a bad release: from the first request a flaky-* release of the demo
product serves to its rollback starting, against the issue's limit of 60 s (measured in the same run).

Setup, as `make run` has it on the embedded defaults: a migrated SQLite database in a temporary directory,
the shipped pipelines (``ensure_defaults``), and --runs (5) demo products (``python -m demo_product``,
the real process: about four requests a second, its version read each second from its releases file),
each registered as a service with a scrape source every 15 s, and a beat thread in this process sending
``monitoring.scrape.scrape_due_sources`` every 5 s as beat does. The products serve v0 for --warm-up
(75) seconds first, so that each analysis window opens full of the good release's traffic, as it does
after a product has been up a while.

Each run deploys ``flaky-<n>`` to an environment of its own whose pipeline is the demo pipeline from its
backend deploy on (backend, frontend, flags, health validation and the analysis as shipped: 60 s, every
15 s over a 60 s window, two breaches in a row fail it), its backend step writing that run's product's
releases file and its analysis watching that run's service; the runner runs it in this process
(``deployments.runner.run``: the engine a worker runs; dispatch is bench/deployments.py's figure). Each run
uses its own product so that no run's window holds an earlier run's flaky traffic.

- First bad request: when the product prints "now serving flaky-<n>", which it does at the first second of
  traffic it serves as that version (the first request of the bad release; its first error comes later),
  read from its stdout by a thread here, wall clock.
- Rollback starting: the deployment's log line "a step failed: rolling back" (stored with the host's wall
  clock).

Then, for information, --good-runs (1) good releases (``v2``) are deployed the same way, one after the
other on the first products, and must pass their minute of analysis (a good release's requests fail
0.1 % of the time against the 1 % limit).

Printed: each run's figure, the median of the runs and median / 60 s (goal <= 1). Exit status 1 when a
flaky release is not rolled back or a good one is, 0 otherwise (MISSED is printed when the median is
over the limit).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench._harness import BASE_DIR, free_port  # noqa: E402

LIMIT_SECONDS = 60.0
CLOSED = "http://127.0.0.1:9"  # the products' flag lookups and pings: nothing listens there


class Product:
    """One demo product process and the moment it first served each version."""

    def __init__(self, index: int, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.index = index
        self.directory = directory
        self.port = free_port()
        config = directory / "config.json"
        config.write_text(
            json.dumps(
                {
                    "port": self.port,
                    "control_plane_url": CLOSED,
                    "token": "cpt_none",
                    "ping_path": "/ping/none",
                    "releases_file": str(directory / "releases"),
                    "seed": 17 + index,
                }
            )
        )
        self.process = subprocess.Popen(
            [sys.executable, "-m", "demo_product", "--config", str(config)],
            cwd=BASE_DIR,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.serving: dict[str, float] = {}
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            at = time.time()
            self.lines.append(line.rstrip())
            if "now serving " in line:
                version = line.split("now serving ", 1)[1].split(" ", 1)[0]
                self.serving.setdefault(version, at)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def setup_django() -> Path:
    var_dir = Path(tempfile.mkdtemp(prefix="bench-deploy-analysis-"))
    os.environ["CONTROLPLANE_VAR_DIR"] = str(var_dir)
    os.environ["DATABASE_URL"] = f"sqlite:///{var_dir / 'bench.sqlite3'}"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings")
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)
    return var_dir


def pipeline_for(product: Product, service: str) -> list[dict[str, Any]]:
    """The demo steps from the backend deploy on, acting on ``product`` and watching ``service``."""
    from deployments.defaults import DEMO_STEPS

    names = [step["name"] for step in DEMO_STEPS]
    steps = json.loads(json.dumps(DEMO_STEPS[names.index("backend deploy") :]))
    for step in steps:
        for part in (step, step.get("rollback") or {}):
            if "DEMO_PRODUCT_DIR" in part.get("env", {}):
                part["env"]["DEMO_PRODUCT_DIR"] = str(product.directory)
        if step["kind"] == "analysis":
            for condition in step["conditions"]:
                condition["service"] = service
    return steps


def beat(stop: threading.Event) -> None:
    """What beat sends every 5 s for the scrapes (the chart refreshes and checks are not needed here)."""
    from django.db import connection

    from monitoring.scrape import scrape_due_sources

    try:
        while not stop.wait(5.0):
            try:
                scrape_due_sources()
            except Exception as exc:  # a locked SQLite write, say: beat tries again at its next tick
                print(f"    (beat: {type(exc).__name__}: {exc})", flush=True)
    finally:
        connection.close()


def wait_until_ready(product: Product, timeout: float = 20.0) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{product.port}/api/health", timeout=1):  # noqa: S310
                return
        except OSError:
            time.sleep(0.2)
    sys.exit(f"bench: the demo product on port {product.port} did not answer: {product.lines[-5:]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--warm-up", type=float, default=75.0, help="seconds of good traffic before the first run")
    parser.add_argument("--good-runs", type=int, default=1, help="good releases deployed after the flaky ones")
    options = parser.parse_args()
    var_dir = setup_django()

    from controlplane.audit import Actor
    from deployments.defaults import DEMO_ANALYSIS, ensure_defaults
    from deployments.models import Deployment, DeploymentStatus, LogLine
    from deployments.runner import run
    from deployments.services import deployment_request, environment_save, pipeline_save
    from monitoring.models import MetricSource, Service, SourceKind

    actor = Actor.system("bench")
    ensure_defaults(actor=actor)
    print(
        f"demo analysis as shipped: {DEMO_ANALYSIS['duration']} s, every {DEMO_ANALYSIS['interval']} s over a "
        f"{DEMO_ANALYSIS['window']} s window, {DEMO_ANALYSIS['failure_limit']} breaches in a row fail; "
        f"{options.runs} runs, SQLite in {var_dir}",
        flush=True,
    )
    products = [Product(index, var_dir / f"product-{index}") for index in range(options.runs)]
    stop = threading.Event()
    beating = threading.Thread(target=beat, args=(stop,), daemon=True)
    figures: list[float] = []
    missed = False
    try:
        for product in products:
            wait_until_ready(product)
            service = Service.objects.create(name=f"bench-demo-{product.index}")
            MetricSource.objects.create(
                service=service,
                kind=SourceKind.SCRAPE,
                urls=f"http://127.0.0.1:{product.port}/metrics",
                interval_seconds=15,
                timeout_seconds=5.0,
            )
            pipeline = pipeline_save(
                name=f"bench-analysis-{product.index}", steps=pipeline_for(product, service.name), actor=actor
            )
            environment_save(name=f"bench-analysis-{product.index}", pipeline=pipeline, actor=actor)
        beating.start()
        print(f"warming up: {options.warm_up:g} s of v0's traffic on each product", flush=True)
        time.sleep(options.warm_up)
        for product in products:
            version = f"flaky-{product.index + 1}"
            deployment = deployment_request(environment=f"bench-analysis-{product.index}", version=version, actor=actor)
            outcome = run(deployment.pk)
            deployment = Deployment.objects.get(pk=deployment.pk)
            rolling = LogLine.objects.filter(deployment=deployment, message="a step failed: rolling back").first()
            first_bad = product.serving.get(version)
            if outcome != DeploymentStatus.ROLLED_BACK or rolling is None or first_bad is None:
                print(
                    f"run {product.index + 1}: {version} ended {outcome} ({deployment.error}): not caught", flush=True
                )
                missed = True
                continue
            analysis = deployment.step_runs.filter(kind="analysis").first()
            for line in (analysis.output if analysis else "").splitlines():
                if line.startswith("round "):
                    print(f"    {line}", flush=True)
            figure = rolling.time.timestamp() - first_bad
            figures.append(figure)
            started = datetime.fromtimestamp(first_bad).strftime("%H:%M:%S")
            print(
                f"run {product.index + 1}: {version} first served at {started}, rollback started {figure:.1f} s later "
                f"({deployment.error})",
                flush=True,
            )
        for product in products[: options.good_runs]:
            deployment = deployment_request(environment=f"bench-analysis-{product.index}", version="v2", actor=actor)
            outcome = run(deployment.pk)
            error = Deployment.objects.get(pk=deployment.pk).error
            print(f"good run {product.index + 1}: v2 ended {outcome}{f' ({error})' if error else ''}", flush=True)
            missed = missed or outcome != DeploymentStatus.SUCCEEDED
    finally:
        stop.set()
        for product in products:
            product.stop()
        if beating.is_alive():
            beating.join(timeout=10)
    if not figures:
        print("no run was caught: MISSED")
        return 1
    median = statistics.median(figures)
    ratio = median / LIMIT_SECONDS
    runs = f"{len(figures)} runs (max {max(figures):.1f} s)"
    print(f"first bad request -> rollback starting: median {median:.1f} s of {runs}")
    print(f"ratio median / limit {LIMIT_SECONDS:g} s: {ratio:.2f} (goal <= 1): {'ok' if ratio <= 1 else 'MISSED'}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
