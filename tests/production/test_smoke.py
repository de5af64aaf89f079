"""The production smoke test: DEPLOYMENT_GUIDE.md followed as written, on 127.0.0.1.

It fills ``.env.production.example`` for the local PostgreSQL, Redis and RabbitMQ, runs every command
of the guide's ``smoke:`` blocks, starts the processes of ``deploy/systemd/`` with
``DJANGO_ENV=production``, and checks what an operator would: health, ``check --deploy``, a login
through the proxy's headers, an OFREP answer, a demo deployment on the worker, beat's heartbeat.
Runs in CI's service round (``DATABASE_URL`` on PostgreSQL); it needs the three servers.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlencode

import psycopg
import pytest
from pyrage import x25519

from tests.conftest import BASE_DIR
from tests.httpsink import HttpSink

pytestmark = [
    pytest.mark.service("postgres"),
    pytest.mark.service("redis"),
    pytest.mark.service("rabbitmq"),
    pytest.mark.skipif(
        not os.environ.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://")),
        reason="the production smoke test runs in CI's service round (DATABASE_URL on PostgreSQL)",
    ),
]
GUIDE = BASE_DIR / "DEPLOYMENT_GUIDE.md"
HOST = "ops.example.test"
PROXY = {"Host": HOST, "X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.7"}  # what nginx sets
PASSWORD = "smoke-" + secrets.token_urlsafe(12)


def blocks(name: str) -> list[str]:
    """The command lines of the guide's block marked ``<!-- smoke:NAME -->``."""
    text = GUIDE.read_text()
    match = re.search(rf"<!-- smoke:{name} -->\n```sh\n(.*?)```", text, re.S)
    assert match, f"the guide has no smoke:{name} block"
    return [line for line in match.group(1).splitlines() if line.strip() and not line.startswith("#")]


def unit_command(unit: str) -> str:
    """The unit's ExecStart, with its Environment= lines exported first."""
    text = (BASE_DIR / "deploy" / "systemd" / f"controlplane-{unit}.service").read_text()
    exports = "".join(f"export {value}; " for value in re.findall(r"^Environment=(\S+)$", text, re.M))
    return exports + "exec " + re.search(r"^ExecStart=(.+)$", text, re.M).group(1)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Machine:
    """Stands in for the production host: /etc/controlplane, /srv/controlplane, /var/lib/controlplane."""

    def __init__(self, tmp: Path, sink: HttpSink) -> None:
        self.tmp = tmp
        self.etc = tmp / "etc"
        self.var = tmp / "var"
        self.etc.mkdir()
        self.var.mkdir()
        self.port = free_port()
        self.database = f"cp_smoke_{secrets.token_hex(4)}"
        self.queue = f"smoke-{secrets.token_hex(4)}"
        self.venv_bin = Path(sys.executable).parent
        # The backups' age key, made as the guide says (age-keygen on a safe machine): the public key
        # in the environment, the identity in a file only the service reads.
        identity = x25519.Identity.generate()
        identity_file = self.etc / "backup-identity.txt"
        identity_file.write_text(str(identity) + "\n")
        identity_file.chmod(0o600)
        values = {
            "SECRET_KEY": secrets.token_urlsafe(64),
            "ALLOWED_HOSTS": f"{HOST},127.0.0.1",
            "CSRF_TRUSTED_ORIGINS": f"https://{HOST}",
            "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{self.database}",
            "REDIS_URL": "redis://127.0.0.1:6379/11",
            "CELERY_BROKER_URL": "amqp://guest:guest@127.0.0.1:5672//",
            "PORT": str(self.port),
            "WEB_CONCURRENCY": "2",
            "CONTROLPLANE_VAR_DIR": str(self.var),
            "BACKUP_DIR": str(self.var / "backups"),
            "SENTRY_DSN": f"http://smokekey@127.0.0.1:{sink.port}/1",
            "EMAIL_URL": "smtp://127.0.0.1:2525",
            "CONTROLPLANE_ADMIN_PASSWORD": PASSWORD,
            "SLACK_WEBHOOK_URL": f"http://127.0.0.1:{sink.port}/slack",
            "BACKUP_AGE_RECIPIENTS": str(identity.to_public()),
            "BACKUP_AGE_IDENTITY_FILE": str(identity_file),
        }
        lines = []
        for line in (BASE_DIR / ".env.production.example").read_text().splitlines():
            key = line.split("=", 1)[0] if "=" in line and not line.startswith("#") else None
            lines.append(f"{key}={values.pop(key)}" if key in values else line)
        assert not values, f"not in .env.production.example: {sorted(values)}"
        # This test's own: a queue and a cache prefix no other run shares.
        lines += [f"CELERY_QUEUE={self.queue}", f"CACHE_KEY_PREFIX={self.queue}"]
        self.env_file = self.etc / "env"
        self.env_file.write_text("\n".join(lines) + "\n")
        self.processes: list[subprocess.Popen] = []

    def shell(self, line: str) -> str:
        """A guide line as this machine runs it: its paths, its Python, and nginx's header for curl."""
        line = line.replace("/etc/controlplane/", f"{self.etc}/").replace("/var/lib/controlplane/", f"{self.var}/")
        line = line.replace("/srv/controlplane/.venv/bin/", ".venv/bin/").replace("/srv/controlplane/", f"{BASE_DIR}/")
        line = re.sub(r"(?<![\w/.])\.venv/bin/", f"{self.venv_bin}/", line)
        return line.replace("curl ", 'curl -H "X-Forwarded-Proto: https" -H "Host: ops.example.test" ', 1)

    def environ(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "PYTEST", "CONTROLPLANE_"))}
        for name in ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "CELERY_QUEUE", "CACHE_KEY_PREFIX"):
            env.pop(name, None)
        env["CONTROLPLANE_URL"] = f"http://127.0.0.1:{self.port}"
        return env

    def run(self, lines: list[str], *, cwd: Path = BASE_DIR, timeout: float = 300) -> str:
        script = f"set -euo pipefail\nset -a; . {self.env_file}; set +a\n" + "\n".join(map(self.shell, lines))
        result = subprocess.run(
            ["bash", "-c", script], cwd=cwd, env=self.environ(), capture_output=True, text=True, timeout=timeout
        )
        assert result.returncode == 0, f"{script}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
        return result.stdout

    def start(self, unit: str) -> Path:
        log = self.tmp / f"{unit}.log"
        command = self.shell(unit_command(unit)).replace("%H", socket.gethostname())
        process = subprocess.Popen(
            ["bash", "-c", f"set -a; . {self.env_file}; set +a; {command}"],
            cwd=BASE_DIR,
            env=self.environ(),
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.processes.append(process)
        return log

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)

    def request(self, path: str, *, data: bytes | None = None, headers: dict | None = None, proxy: bool = True):
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}", data=data, headers={**(PROXY if proxy else {}), **(headers or {})}
        )
        opener = urllib.request.build_opener(_NoRedirect)
        try:
            return opener.open(request, timeout=10)
        except urllib.error.HTTPError as error:
            return error


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def wait_until(check, seconds: float, what: str, log: Path | None = None) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (OSError, psycopg.Error):
            pass
        time.sleep(0.5)
    pytest.fail(f"{what} within {seconds} s" + (f"\n{log.read_text()[-4000:]}" if log else ""))


def cookies(response) -> dict[str, str]:
    jar = {}
    for header in response.headers.get_all("Set-Cookie") or []:
        name, _, rest = header.partition("=")
        jar[name] = rest.split(";", 1)[0]
    return jar


@pytest.fixture
def machine(tmp_path):
    sink = HttpSink().start()
    machine = Machine(tmp_path, sink)
    machine.sink = sink
    with psycopg.connect("postgres://postgres@127.0.0.1:5432/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{machine.database}"')
    yield machine
    machine.stop()
    sink.stop()
    with psycopg.connect("postgres://postgres@127.0.0.1:5432/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{machine.database}" WITH (FORCE)')


def test_the_guide_brings_up_a_working_production_control_plane(machine, tmp_path):
    # Install: a fresh virtualenv from requirements.txt, in a directory of its own (the suite's own
    # environment runs the rest; re-creating it under the running suite would pull the floor away).
    srv = tmp_path / "srv"
    srv.mkdir()
    shutil.copy(BASE_DIR / "requirements.txt", srv)
    install = [line.replace("cd /srv/controlplane", f"cd {srv}") for line in blocks("install")]
    subprocess.run(
        ["bash", "-c", "set -euo pipefail\n" + "\n".join(install)], check=True, timeout=600, capture_output=True
    )
    assert (srv / ".venv" / "bin" / "gunicorn").exists()

    first_start = machine.run(blocks("first-start"))
    assert "verified: restore" in first_start and "overall: pass" in first_start
    token = (machine.etc / "wingmanmatch-backend.token").read_text().strip()
    assert token and "\n" not in token

    web = machine.start("web")
    worker = machine.start("worker")
    beat = machine.start("beat")
    wait_until(lambda: machine.request("/health/ready", proxy=False).status == 200, 60, "/health/ready 200", web)
    # One JSON line per request, the control plane's own (gunicorn's access log is off behind nginx).
    wait_until(lambda: '"logger": "controlplane.request"' in web.read_text(), 10, "no JSON request log line", web)
    assert '"logger":"gunicorn.access"' not in web.read_text()

    # Plain HTTP without the proxy's header is sent to HTTPS; with it, the login page is served.
    assert machine.request("/accounts/login/", proxy=False, headers={"Host": HOST}).status == 301
    page = machine.request("/accounts/login/")
    assert page.status == 200
    jar = cookies(page)
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.read().decode()).group(1)
    login = machine.request(
        "/accounts/login/",
        data=urlencode({"username": "admin", "password": PASSWORD, "csrfmiddlewaretoken": csrf}).encode(),
        headers={"Cookie": f"csrftoken={jar['csrftoken']}", "Referer": f"https://{HOST}/accounts/login/"},
    )
    assert login.status == 302, login.read()[:2000]
    assert "Secure" in " ".join(login.headers.get_all("Set-Cookie"))
    session = cookies(login)["sessionid"]
    dashboard = machine.request("/", headers={"Cookie": f"sessionid={session}"})
    assert dashboard.status == 200 and "<h1>Dashboard</h1>" in dashboard.read().decode()

    # A product service asks for its flags over OFREP with its token.
    ofrep = machine.request(
        "/ofrep/v1/evaluate/flags",
        data=json.dumps({"context": {"targetingKey": "user-1"}}).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    assert ofrep.status == 200
    assert {f["key"] for f in json.loads(ofrep.read())["flags"]} >= {"ai_coach_chat", "buddy_matching"}

    # The worker is ready; the emergency commands run: a flag killed, status read, deployments and a rollback.
    wait_until(lambda: "ready" in worker.read_text(), 60, "the worker did not start", worker)
    emergency = machine.run(blocks("emergency"))
    assert '"enabled": false' in emergency.replace('"enabled":false', '"enabled": false')
    assert "[backend deploy] succeeded" in emergency and "rollback v1 to demo requested" in emergency

    # Beat's heartbeat arrives through the broker and a worker.
    def heartbeat() -> bool:
        with psycopg.connect(f"postgres://postgres@127.0.0.1:5432/{machine.database}") as conn:
            return conn.execute("SELECT count(*) FROM monitoring_heartbeat WHERE name = 'celery'").fetchone()[0] > 0

    wait_until(heartbeat, 90, "beat's heartbeat did not arrive", beat)
