"""`make run` on the embedded defaults: web, worker and beat come up, a task from the shell is run by
the worker, the printed password logs in, Ctrl-C stops all three quietly, and a killed make leaves
none of them behind."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import time
import urllib.request
from http.cookiejar import CookieJar
from pathlib import Path
from urllib.parse import urlencode

import pytest

from tests.conftest import BASE_DIR, manage, subprocess_env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate, seconds: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.3)
    pytest.fail(f"{what} within {seconds} s; output so far:\n{log.read_text()}")


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def processes_of(var_dir: Path) -> dict[int, str]:
    """The live processes started with this data directory in their environment: pid -> command line."""
    found = {}
    marker = f"CONTROLPLANE_VAR_DIR={var_dir}\0".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker in (entry / "environ").read_bytes() + b"\0":
                found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return found


def start_make_run(env: dict[str, str], log: Path) -> subprocess.Popen:
    with log.open("w") as out:
        return subprocess.Popen(
            ["make", "--no-print-directory", "run"],
            cwd=BASE_DIR,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, as a terminal's Ctrl-C would reach
        )


def test_make_run_serves_runs_tasks_and_stops_on_ctrl_c(tmp_path):
    port = free_port()
    var_dir = tmp_path / "var"
    env = subprocess_env(
        PORT=str(port),
        CONTROLPLANE_VAR_DIR=str(var_dir),
        DATABASE_URL=None,
        REDIS_URL=None,
        CELERY_BROKER_URL=None,
        CONTROLPLANE_ADMIN_PASSWORD=None,
        CONTROLPLANE_ADMIN_USER=None,
        MAKEFLAGS=None,
        MAKELEVEL=None,
    )
    log = tmp_path / "make-run.log"
    make = start_make_run(env, log)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: http_ok(base + "/accounts/login/"), 120, "the login page did not answer", log)
        wait_until(
            lambda: "celery@" in log.read_text() and "ready" in log.read_text(), 60, "the worker did not start", log
        )
        assert "beat: Starting" in log.read_text()

        # The password printed once logs in and shows the dashboard.
        password = re.search(r"Password \(shown this once\): (\S+)", log.read_text()).group(1)
        jar = CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        login_page = opener.open(base + "/accounts/login/").read().decode()
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', login_page).group(1)
        body = urlencode({"username": "admin", "password": password, "csrfmiddlewaretoken": token}).encode()
        request = urllib.request.Request(base + "/accounts/login/", data=body, headers={"Referer": base + "/"})
        dashboard = opener.open(request)
        assert dashboard.url == base + "/"
        assert "<h1>Dashboard</h1>" in dashboard.read().decode()

        # A task sent from `manage.py shell` is run by the worker, and its log says so.
        sent = subprocess.run(
            manage(
                "shell", "--verbosity", "0", "-c", "from monitoring.tasks import heartbeat; print(heartbeat.delay().id)"
            ),
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        task_id = sent.stdout.strip().splitlines()[-1]  # logging shares stdout
        wait_until(
            lambda: re.search(rf"Task monitoring.tasks.heartbeat\[{task_id}\] succeeded", log.read_text()),
            60,
            "the worker did not run the task",
            log,
        )

        # The demo environment: one deployment succeeds, one rolls back, both run by make run's worker.
        good = subprocess.run(
            manage("deploy", "demo", "--version", "v1", "--wait", "--timeout", "90"),
            env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert good.returncode == 0, good.stdout + good.stderr + log.read_text()[-3000:]
        assert "[backend deploy] succeeded" in good.stdout
        bad = subprocess.run(
            manage("deploy", "demo", "--version", "bad-2", "--wait", "--timeout", "90"),
            env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert bad.returncode == 1 and "ended rolled_back" in bad.stderr, bad.stdout + bad.stderr
        assert "[rollback: backend rollback] succeeded" in bad.stdout
    finally:
        stop_asked_at = len(log.read_text())
        os.killpg(make.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
        try:
            status = make.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(make.pid, signal.SIGKILL)
            pytest.fail(f"Ctrl-C did not stop make run within 10 s:\n{log.read_text()}")
    # The recipe exits 0 and make adds nothing; make itself then ends by the SIGINT it got, as GNU make
    # always does (a shell shows 130, and prints nothing for it).
    assert status in (0, -signal.SIGINT), status
    stopping = log.read_text()[stop_asked_at:]
    for noise in ("ERROR", "Traceback", "Logging error", "SIGKILL", "make: ***"):
        assert noise not in stopping, stopping
    for name in ("web", "worker", "beat"):
        assert f"{name}.1 stopped" in stopping, stopping
    # Nothing of the three is left behind: the port is free, the process group empty, no process remains.
    assert not http_ok(base + "/accounts/login/")
    with pytest.raises(ProcessLookupError):
        os.killpg(make.pid, 0)
    assert not processes_of(var_dir)

    # make killed outright (its window closed, say): the three stop by themselves (controlplane/attached.py).
    # The data directory is ready from the first start, so this one comes up sooner.
    log = tmp_path / "make-run-killed.log"
    make = start_make_run(env, log)
    try:
        wait_until(lambda: http_ok(base + "/accounts/login/"), 120, "the login page did not answer", log)
        wait_until(lambda: "celery@" in log.read_text() and " ready" in log.read_text(), 60, "no worker", log)
        make.kill()
        make.wait(timeout=10)
        assert processes_of(var_dir)  # honcho and the three outlive make for a moment
        wait_until(lambda: not processes_of(var_dir), 10, "processes were left running after make was killed", log)
    finally:
        for pid in processes_of(var_dir):  # whatever a failure above left, so that the next test runs
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
    assert not http_ok(base + "/accounts/login/")
