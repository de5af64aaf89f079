"""`make run` on the embedded defaults: web, worker and beat come up with the demo product beside them
(registered and scraped), a task from the shell is run by the worker, the printed password logs in, the
README's deployment demo works as written (and reaches the demo product), Ctrl-C stops all four quietly,
and a killed make leaves none of them behind. One `make run` serves the module."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import sqlite3
import stat
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from http.cookiejar import CookieJar
from pathlib import Path
from urllib.parse import urlencode

import pytest

from tests.conftest import BASE_DIR, EMBEDDED_ROUND_ONLY, manage, subprocess_env

pytestmark = EMBEDDED_ROUND_ONLY


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


def make_run_env(port: int, var_dir: Path, **overrides: str | None) -> dict[str, str]:
    """The environment of a fresh `make run`: embedded defaults (no server URLs), no preset operator,
    not inside another make, the demo product on a free port."""
    overrides = {"DEMO_PRODUCT_PORT": str(free_port()), **overrides}
    return subprocess_env(
        PORT=str(port),
        CONTROLPLANE_VAR_DIR=str(var_dir),
        DATABASE_URL=None,
        REDIS_URL=None,
        CELERY_BROKER_URL=None,
        CONTROLPLANE_ADMIN_PASSWORD=None,
        CONTROLPLANE_ADMIN_USER=None,
        MAKEFLAGS=None,
        MAKELEVEL=None,
        **overrides,
    )


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


@dataclass
class MakeRun:
    env: dict[str, str]
    var_dir: Path
    base: str
    log: Path
    make: subprocess.Popen
    tmp_path: Path


@pytest.fixture(scope="module")
def make_run(tmp_path_factory) -> Iterator[MakeRun]:
    """One fresh `make run` for the tests of this module (it takes a while to start); the last test
    stops it with Ctrl-C and starts it again."""
    tmp_path = tmp_path_factory.mktemp("make-run")
    port = free_port()
    var_dir = tmp_path / "var"
    env = make_run_env(port, var_dir)
    log = tmp_path / "make-run.log"
    make = start_make_run(env, log)
    run = MakeRun(env, var_dir, f"http://127.0.0.1:{port}", log, make, tmp_path)
    try:
        wait_until(lambda: http_ok(run.base + "/accounts/login/"), 120, "the login page did not answer", log)
        wait_until(lambda: "celery@" in log.read_text() and " ready" in log.read_text(), 60, "no worker", log)
        yield run
    finally:
        with contextlib.suppress(OSError):
            os.killpg(run.make.pid, signal.SIGKILL)  # whatever a failure left (the last test stops it itself)
        for pid in processes_of(var_dir):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


def test_make_run_serves_runs_tasks_and_names_the_password_file(make_run):
    base, log, env = make_run.base, make_run.log, make_run.env
    assert "beat: Starting" in log.read_text()

    # The printed password logs in and shows the dashboard; it is kept in an owner-only file, named
    # just before the three start and again by the worker once it is ready (the password scrolled away).
    output = log.read_text()
    password = re.search(r"Password: (\S+)", output).group(1)
    file = make_run.var_dir / "operator-password.txt"
    assert stat.S_IMODE(file.stat().st_mode) == 0o600 and password in file.read_text()
    assert output.index("Password: ") > output.index("ensure_demo_environment")  # the last line before honcho
    wait_until(lambda: f"Operator login: user 'admin', password in {file}" in log.read_text(), 30, "no reminder", log)
    reminder = log.read_text().index("Operator login: user 'admin'")
    assert reminder > log.read_text().index("[tasks]")  # after the worker's banner, beside its "ready."
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

    # The demo product answers beside them, registered as a service whose /metrics the worker scrapes.
    demo = f"http://127.0.0.1:{env['DEMO_PRODUCT_PORT']}"
    wait_until(lambda: http_ok(demo + "/api/health"), 30, "the demo product did not answer", log)
    scraped = (
        "SELECT m.urls FROM monitoring_metricsource m JOIN monitoring_service s ON s.id = m.service_id "
        "WHERE s.name = 'wingmanmatch-demo' AND m.last_success IS NOT NULL"
    )

    def demo_scraped() -> bool:
        with contextlib.closing(sqlite3.connect(make_run.var_dir / "controlplane.sqlite3")) as db:
            return db.execute(scraped).fetchall() == [(demo + "/metrics",)]

    wait_until(demo_scraped, 60, "the demo product's /metrics was not scraped", log)


def readme_demo_commands() -> list[str]:
    """The command block(s) of the README's deployment demo, each line as written there."""
    readme = (BASE_DIR / "README.md").read_text()
    section = readme.split("\n## Deployments with automatic rollback\n", 1)[1].split("\n## ", 1)[0]
    commands = []
    for block in re.findall(r"(?:^    \S.*\n)+", section, flags=re.MULTILINE):  # indented code blocks
        lines = [line[4:] for line in block.splitlines()]
        if any("manage.py deploy demo" in line for line in lines):
            commands += lines
    return commands


def test_the_readmes_deployment_demo_works_as_written(make_run):
    """Each line of the README's demo, run verbatim with bash against this `make run` (its worker runs
    the deployments); a line whose comment says "(exit N)" must exit N, every other one 0."""
    commands = readme_demo_commands()
    assert len(commands) >= 3 and any("--rollback" in command for command in commands), commands
    outputs = []
    for command in commands:
        expected = re.search(r"\(exit (\d+)\)", command)
        done = subprocess.run(
            ["bash", "-c", command], cwd=BASE_DIR, env=make_run.env, capture_output=True, text=True, timeout=180
        )
        assert done.returncode == (int(expected.group(1)) if expected else 0), (
            f"{command}\n{done.stdout}{done.stderr}{make_run.log.read_text()[-3000:]}"
        )
        outputs.append(done.stdout + done.stderr)

    # The deployments end as the README says: v1 and v2 succeed, bad-3 fails at its backend step and is
    # rolled back (v2 still runs), and --rollback deploys v1 again.
    assert "ended rolled_back" in outputs[2] and "[rollback: backend rollback] succeeded" in outputs[2]
    assert re.search(r"deployment #\d+: rollback v1 to demo", outputs[3]), outputs[3]
    with sqlite3.connect(make_run.var_dir / "controlplane.sqlite3") as db:
        rows = db.execute(
            "SELECT d.version, d.type, d.status FROM deployments_deployment d "
            "JOIN deployments_environment e ON e.id = d.environment_id WHERE e.name = 'demo' ORDER BY d.id"
        ).fetchall()
    assert rows == [
        ("v1", "deploy", "succeeded"),
        ("v2", "deploy", "succeeded"),
        ("bad-3", "deploy", "rolled_back"),
        ("v1", "rollback", "succeeded"),
    ]
    # The demo product serves what the pipeline deployed last.
    releases = (make_run.var_dir / "demo-product" / "releases").read_text().split()
    assert releases == ["v1", "v2", "v1"], releases


def test_make_run_stops_on_ctrl_c_and_when_killed(make_run):
    base, env, var_dir = make_run.base, make_run.env, make_run.var_dir
    log, make = make_run.log, make_run.make
    stop_asked_at = len(log.read_text())
    os.killpg(make.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
    try:
        status = make.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pytest.fail(f"Ctrl-C did not stop make run within 10 s:\n{log.read_text()}")
    # The recipe exits 0 and make adds nothing; make itself then ends by the SIGINT it got, as GNU make
    # always does (a shell shows 130, and prints nothing for it).
    assert status in (0, -signal.SIGINT), status
    stopping = log.read_text()[stop_asked_at:]
    for noise in ("ERROR", "Traceback", "Logging error", "SIGKILL", "make: ***"):
        assert noise not in stopping, stopping
    for name in ("web", "worker", "beat", "demo"):
        assert f"{name}.1 stopped" in stopping, stopping
    # Nothing of the three is left behind: the port is free, the process group empty, no process remains.
    assert not http_ok(base + "/accounts/login/")
    with pytest.raises(ProcessLookupError):
        os.killpg(make.pid, 0)
    assert not processes_of(var_dir)

    # make killed outright (its window closed, say): the three stop by themselves (controlplane/attached.py).
    # The data directory is ready from the first start, so this one comes up sooner; the account exists
    # and its unchanged password is still in the file, which the output names.
    log = make_run.tmp_path / "make-run-killed.log"
    make_run.make = make = start_make_run(env, log)
    wait_until(lambda: http_ok(base + "/accounts/login/"), 120, "the login page did not answer", log)
    wait_until(lambda: "celery@" in log.read_text() and " ready" in log.read_text(), 60, "no worker", log)
    assert f"Its password is in {var_dir / 'operator-password.txt'}" in log.read_text()
    make.kill()
    make.wait(timeout=10)
    assert processes_of(var_dir)  # honcho and the three outlive make for a moment
    wait_until(lambda: not processes_of(var_dir), 10, "processes were left running after make was killed", log)
    assert not http_ok(base + "/accounts/login/")
