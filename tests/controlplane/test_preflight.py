"""A server that does not answer stops preflight and every manage.py command with one line naming it (no
traceback, no password); the connection pool (DATABASE_POOL_SIZE) is what the settings say it is."""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from tests.conftest import BASE_DIR, free_port, manage, service_url, subprocess_env
from tests.faultproxy import FaultProxy

PASSWORD = "pr3flight-s3cret"
EMBEDDED = {"DATABASE_URL": None, "REDIS_URL": None, "CELERY_BROKER_URL": None, "DATABASE_POOL_SIZE": None}


def run(*args: str, timeout: float = 60, **env: str | None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        manage(*args), env=subprocess_env(**{**EMBEDDED, **env}), cwd=BASE_DIR, capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    """The one line a refusal prints: exit 1, nothing else on stderr, no traceback, no password."""
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert PASSWORD not in result.stdout + result.stderr
    return lines[0]


def refused(variable: str) -> dict[str, str]:
    """``variable`` pointing at a port nothing listens on, with a password in the URL."""
    port = free_port()
    return {
        "DATABASE_URL": {"DATABASE_URL": f"postgres://cp:{PASSWORD}@127.0.0.1:{port}/cp"},
        "REDIS_URL": {"REDIS_URL": f"redis://:{PASSWORD}@127.0.0.1:{port}/0"},
        "CELERY_BROKER_URL": {"CELERY_BROKER_URL": f"amqp://cp:{PASSWORD}@127.0.0.1:{port}//"},
    }[variable]


@pytest.mark.parametrize(
    ("part", "variable"), [("database", "DATABASE_URL"), ("cache", "REDIS_URL"), ("broker", "CELERY_BROKER_URL")]
)
def test_preflight_names_the_server_that_refuses(part, variable, tmp_path):
    result = run("preflight", CONTROLPLANE_VAR_DIR=str(tmp_path), **refused(variable))
    line = one_line(result)
    assert f"{part} does not answer ({variable}=" in line
    assert ":***@127.0.0.1:" in line  # the address, redacted
    assert "refused" in line.lower()  # and the reason
    others = {"database", "cache", "broker"} - {part}
    assert not any(f"{other} does not answer" in line for other in others), line
    assert result.stdout == ""


def test_preflight_gives_up_on_servers_that_hang(tmp_path):
    """Servers that accept the connection and never answer: each part fails on its own short timeout."""
    proxies = [FaultProxy("127.0.0.1", free_port()) for _ in range(3)]
    try:
        for proxy in proxies:
            proxy.hang()
        database, cache, broker = (proxy.port for proxy in proxies)
        started = time.monotonic()
        result = run(
            "preflight",
            CONTROLPLANE_VAR_DIR=str(tmp_path),
            DATABASE_URL=f"postgres://cp:{PASSWORD}@127.0.0.1:{database}/cp",
            REDIS_URL=f"redis://:{PASSWORD}@127.0.0.1:{cache}/0",
            CELERY_BROKER_URL=f"amqp://cp:{PASSWORD}@127.0.0.1:{broker}//",
        )
        elapsed = time.monotonic() - started
    finally:
        for proxy in proxies:
            proxy.close()
    line = one_line(result)
    for part, variable in [("database", "DATABASE_URL"), ("cache", "REDIS_URL"), ("broker", "CELERY_BROKER_URL")]:
        assert f"{part} does not answer ({variable}=" in line
    # The defaults: 5 s for the database, 4 for the broker, a quarter second per cache call, all at once;
    # Python and Django start in a few seconds more on a busy machine.
    assert elapsed < 25, f"preflight took {elapsed:.1f} s"


@pytest.mark.parametrize(
    "command",
    [
        ["migrate", "--noinput"],
        ["ensure_operator"],
        ["import_flags", "flags/fixtures/wingmanmatch.json"],
        ["create_api_token", "ci", "--scopes", "flags:read"],
        ["deploy", "staging", "--version", "1.2.3"],
        ["backup"],
        ["verify_backup", "--latest", "db"],
    ],
    ids=lambda command: command[0],
)
def test_a_command_on_a_refused_database_says_so_in_one_line(command, tmp_path):
    line = one_line(run(*command, CONTROLPLANE_VAR_DIR=str(tmp_path), **refused("DATABASE_URL")))
    assert line.startswith("controlplane: the database does not answer (DATABASE_URL=postgres://cp:***@127.0.0.1:")
    assert "Connection refused" in line


def test_any_other_database_error_keeps_its_traceback(tmp_path):
    """A missing table is a programming error: the developer needs the stack, not a line about the server."""
    code = "from django.db import connection; connection.cursor().execute('SELECT * FROM no_such_table')"
    result = run("shell", "-c", code, CONTROLPLANE_VAR_DIR=str(tmp_path))
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "no such table: no_such_table" in result.stderr
    assert "does not answer" not in result.stderr


@pytest.mark.service("postgres")
def test_a_connection_lost_during_a_command_says_so_in_one_line(tmp_path):
    code = "from django.db import connection as c; c.cursor().execute('SELECT pg_terminate_backend(pg_backend_pid())')"
    line = one_line(run("shell", "-c", code, CONTROLPLANE_VAR_DIR=str(tmp_path), DATABASE_URL=service_url("postgres")))
    assert "the database does not answer (DATABASE_URL=" in line and "terminating connection" in line


# --- The connection pool ---------------------------------------------------------------------------------

SHOW_DATABASE = (
    "import json; from django.conf import settings as s; d = s.DATABASES['default'];"
    "print(json.dumps([d.get('CONN_MAX_AGE'), d.get('OPTIONS', {}).get('pool')]))"
)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, [60, None]),
        ({"DATABASE_POOL_SIZE": "0"}, [60, None]),
        ({"DATABASE_POOL_SIZE": "6"}, [0, {"min_size": 1, "max_size": 6, "timeout": 5.0}]),
        (
            {"DATABASE_POOL_SIZE": "6", "DATABASE_CONNECT_TIMEOUT": "2", "DATABASE_CONN_MAX_AGE": "0"},
            [0, {"min_size": 1, "max_size": 6, "timeout": 2.0}],
        ),
    ],
    ids=["default", "zero", "six", "six-with-timeout"],
)
def test_database_pool_size_sets_the_pool(env, expected, tmp_path):
    result = run(
        "shell", "-c", SHOW_DATABASE, CONTROLPLANE_VAR_DIR=str(tmp_path), DATABASE_URL="postgres://cp@db.example.test/cp",
        **env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == expected


@pytest.mark.service("postgres")
def test_threads_share_the_pool_connections(tmp_path):
    """Eight threads one after another on a pool of two: they take turns on the pool's connections (a
    thread without a pool would open a connection of its own each)."""
    code = """
import json, threading
from django.db import connection
pids = []
def work():
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pids.append(cursor.fetchone()[0])
    connection.close()  # back to the pool, as at the end of a request or a task
for _ in range(8):
    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
print(json.dumps([connection.pool is not None, len(pids), len(set(pids)), connection.pool.get_stats()["pool_max"]]))
"""
    result = run(
        "shell", "-c", code, CONTROLPLANE_VAR_DIR=str(tmp_path), DATABASE_URL=service_url("postgres"),
        DATABASE_POOL_SIZE="2",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    pooled, queries, backends, pool_max = json.loads(result.stdout.strip().splitlines()[-1])
    assert pooled and queries == 8 and pool_max == 2
    assert backends <= 2


@pytest.mark.service("postgres")
def test_health_checks_give_their_connections_back_to_the_pool(tmp_path):
    """The health checks' threads keep a connection each between runs; on a pool of two they must give it
    back after each check, or the third check to need one waits past its timeout."""
    code = """
import json
from monitoring.checks import Check, check_database, run_checks
checks = [Check(f"database-{n}", "responseTime", "datastore", check_database) for n in range(6)]
rounds = [sorted({r.status for r in run_checks(checks, deadline_seconds=10)}) for _ in range(3)]
print(json.dumps(rounds))
"""
    result = run(
        "shell", "-c", code, CONTROLPLANE_VAR_DIR=str(tmp_path), DATABASE_URL=service_url("postgres"),
        DATABASE_POOL_SIZE="2", HEALTH_CHECK_TIMEOUT="3",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == [["pass"]] * 3, result.stdout
