"""A flag change made in one process reaches every gunicorn worker (through the shared cache)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from controlplane.audit import Actor
from flags.services import flag_create, flag_update
from tests.conftest import BASE_DIR, subprocess_env, test_database_url

pytestmark = pytest.mark.django_db(transaction=True)


def evaluate(base: str, token: str) -> bool:
    request = urllib.request.Request(
        base + "/ofrep/v1/evaluate/flags/chat",
        data=json.dumps({"context": {"targetingKey": "u1"}}).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())["value"]


def test_every_worker_sees_the_change(make_token, tmp_path):
    flag_create(data={"name": "chat", "enabled": True, "rollout_percent": 100}, actor=Actor.system())
    token = make_token("flags:read")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = tmp_path / "gunicorn.log"
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "controlplane.wsgi", "--bind", f"127.0.0.1:{port}", "--workers", "2"],
        cwd=BASE_DIR,
        env=subprocess_env(DATABASE_URL=test_database_url()),
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                assert evaluate(base, token) is True
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
        # Warm both workers' snapshots with the old value.
        assert all(evaluate(base, token) for _ in range(20))

        flag_update(name="chat", changes={"enabled": False}, actor=Actor.system())  # commits, then bumps
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and any(evaluate(base, token) for _ in range(10)):
            time.sleep(0.1)
        # From here on every answer, from whichever worker, is the new one.
        assert not any(evaluate(base, token) for _ in range(40)), log.read_text()
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
