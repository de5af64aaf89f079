"""A fresh `make run` on the embedded defaults (SQLite, filesystem broker) is healthy: every check passes
on every run, the health score is 100, the detailed report answers 200, and no alert is pending or firing.

On the filesystem broker a worker ping takes as long as the check's timeout, so the workers check used
to fail on every run and "any check failing 3 times running" fired a few minutes after `make run`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request

from tests.conftest import EMBEDDED_ROUND_ONLY, free_port, manage
from tests.controlplane.test_make_run import http_ok, make_run_env, start_make_run, wait_until

pytestmark = EMBEDDED_ROUND_ONLY

CHECK_INTERVAL_SECONDS = 10
RUNS_NEEDED = 4  # more than the 3 failures running that raise an alert

# What the dashboard computes (monitoring.dashboard.health), and what lies behind it.
STATE = """
import json
from django.utils import timezone
from alerting.models import Alert
from alerting.selectors import open_alerts
from monitoring.dashboard import health
from monitoring.models import HealthMetric
score, deductions, _ = health(timezone.now(), open_alerts())
print(json.dumps({
    "score": score,
    "deductions": [d.reason for d in deductions],
    "worker_runs": HealthMetric.objects.filter(component="celery-workers").count(),
    "not_passed": sorted({f"{c}: {s} ({o})" for c, s, o in HealthMetric.objects.exclude(status="pass")
                          .values_list("component", "status", "output")}),
    "open_alerts": [f"{a.rule.name} [{a.dedup_key}] {a.state}" for a in Alert.objects.open().select_related("rule")],
}))
"""


def run_manage(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(manage(*args), env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_a_fresh_install_is_healthy_and_raises_no_alert(tmp_path, http_sink):
    port = free_port()
    env = make_run_env(
        port,
        tmp_path / "var",
        REQUEST_METRICS_FLUSH_SECONDS=None,  # as installed: web processes store their request figures
        HEALTH_CHECK_INTERVAL_SECONDS=str(CHECK_INTERVAL_SECONDS),
        # No alert channel, as installed. Sentry points at a local sink only to catch any error reported.
        SENTRY_DSN=f"http://publickey@127.0.0.1:{http_sink.port}/1",
    )
    run_manage(env, "migrate", "--noinput", "--verbosity", "0")
    token = run_manage(env, "create_api_token", "fresh-install", "--scopes", "monitoring:read").split()[-1]

    log = tmp_path / "make-run.log"
    make = start_make_run(env, log)
    started = time.monotonic()
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until(lambda: http_ok(base + "/accounts/login/"), 120, "the login page did not answer", log)
        state: dict = {}

        def enough_runs() -> bool:
            state.update(json.loads(run_manage(env, "shell", "--verbosity", "0", "-c", STATE).splitlines()[-1]))
            return state["worker_runs"] >= RUNS_NEEDED

        wait_until(enough_runs, 180 - (time.monotonic() - started), f"{RUNS_NEEDED} scheduled check runs", log)
        request = urllib.request.Request(
            base + "/api/deployment/health/comprehensive", headers={"Authorization": f"Bearer {token}"}
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                status, report = response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            status, report = error.code, json.loads(error.read())
    finally:
        os.killpg(make.pid, signal.SIGINT)
        try:
            make.wait(timeout=40)
        except subprocess.TimeoutExpired:  # stopping is test_make_run's subject; here only tidying up
            os.killpg(make.pid, signal.SIGKILL)
            make.wait(timeout=10)

    failing = {key: entries[0]["output"] for key, entries in report["checks"].items() if entries[0]["status"] != "pass"}
    assert (status, report["status"], failing) == (200, "pass", {})
    assert report["checks"]["celery-workers:count"][0]["observedValue"] >= 1
    # Every stored result of every run passed, the workers check's included.
    assert state["not_passed"] == [], state
    assert (state["score"], state["deductions"]) == (100, []), state
    assert state["open_alerts"] == [], state
    reported = [r.path for r in http_sink.requests]
    assert reported == [], "errors were reported to Sentry"
