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
