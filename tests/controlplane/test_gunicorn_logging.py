"""deploy/gunicorn.conf.py's logging: one JSON line per request (the control plane's), and gunicorn's own
JSON access line only when GUNICORN_ACCESS_LOG asks for it."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.conftest import BASE_DIR, free_port, subprocess_env


def serve_one_request(tmp_path, access_log: str | None) -> list[dict]:
    port = free_port()
    log = tmp_path / "web.log"
    env = subprocess_env(
        CONTROLPLANE_VAR_DIR=str(tmp_path / "var"),
        DATABASE_URL=None,
        REDIS_URL=None,
        CELERY_BROKER_URL=None,
        PROMETHEUS_MULTIPROC_DIR=None,
        LOG_FORMAT="json",
        LOG_LEVEL="INFO",
        PORT=str(port),
        WEB_CONCURRENCY="1",
        GUNICORN_ACCESS_LOG=access_log,
    )
    command = [sys.executable, "-m", "gunicorn", "-c", "deploy/gunicorn.conf.py", "controlplane.wsgi"]
    with log.open("w") as output:
        server = subprocess.Popen(command, cwd=BASE_DIR, env=env, stdout=output, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/live", timeout=2) as response:  # noqa: S310
                    request_id = response.headers["X-Request-ID"]
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"gunicorn did not answer:\n{log.read_text()[-3000:]}")
                time.sleep(0.2)
        time.sleep(1)  # gunicorn writes its access line after the response has gone out
    finally:
        server.terminate()
        server.wait(timeout=30)
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("request_id") == request_id]


def test_one_json_line_per_request_by_default(tmp_path):
    lines = serve_one_request(tmp_path, access_log=None)
    assert [line["logger"] for line in lines] == ["controlplane.request"]
    assert lines[0]["path"] == "/health/live" and lines[0]["status"] == 200


def test_gunicorn_access_line_on_request(tmp_path):
    lines = serve_one_request(tmp_path, access_log="true")
    by_logger = {line["logger"]: line for line in lines}
    assert set(by_logger) == {"controlplane.request", "gunicorn.access"}
    access = by_logger["gunicorn.access"]
    assert access["path"] == "/health/live" and access["status"] in (200, "200")
    assert access["remote_addr"] == "127.0.0.1" and access["duration_ms"] >= 0


def test_gunicorn_own_lines_are_written_and_its_control_socket_is_the_servers(gunicorn_server, tmp_path):
    """gunicorn's lines show the process id, which the settings stop logging from collecting: each of
    its lines is written (none replaced by "--- Logging error ---"), from the master (which loads the
    application) and from a worker rejecting a malformed request. gunicornc's socket is under the
    data directory, and is this server's."""
    import re
    import socket
    import stat
    from pathlib import Path

    from django.conf import settings
    from gunicorn.ctl.client import ControlClient

    base = gunicorn_server(workers=1)
    port = int(base.rsplit(":", 1)[1])
    log = tmp_path / f"gunicorn-{port}.log"
    malformed = [
        b"GET /\x01bad HTTP/1.1\r\nHost: x\r\n\r\n",  # a control character in the request line
        b"GET / HTTP/1.1\r\nNo colon here\r\n\r\n",  # a header line without a colon
        b"NONSENSE\r\n\r\n",
    ]
    for request in malformed:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
            client.sendall(request)
            assert client.recv(100).startswith(b"HTTP/1.1 400 ")
    deadline = time.monotonic() + 10
    while log.read_text().count("Invalid request from ip=127.0.0.1") < len(malformed) and time.monotonic() < deadline:
        time.sleep(0.2)
    text = log.read_text()
    assert "--- Logging error ---" not in text, text[-3000:]
    rejected = re.findall(r"^\[[^]]+\] \[(\d+)\] \[WARNING\] Invalid request from ip=127\.0\.0\.1: (.+)$", text, re.M)
    assert len(rejected) == len(malformed), text[-3000:]
    assert any("request line" in error for _, error in rejected), rejected
    assert any("Header" in error for _, error in rejected), rejected
    booted = re.findall(r"^\[[^]]+\] \[(\d+)\] \[INFO\] Booting worker with pid: (\d+)$", text, re.M)
    assert booted and all(shown == pid for shown, pid in booted)  # the master's line, the worker's id
    assert {pid for pid, _ in rejected} == {pid for _, pid in booted}  # the worker's own line, its own id

    control = Path(settings.VAR_DIR) / "gunicorn.ctl"
    while not control.exists() and time.monotonic() < deadline:  # opened just after the first workers start
        time.sleep(0.2)
    assert stat.S_ISSOCK(control.stat().st_mode)
    assert f"Control socket listening at {control}" in log.read_text()
    with ControlClient(str(control), timeout=5) as client:
        listeners = client.send_command("show", ["listeners"])
    assert f"127.0.0.1:{port}" in json.dumps(listeners)
