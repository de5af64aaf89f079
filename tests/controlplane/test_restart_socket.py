"""An upgrade restarts gunicorn (it loads the application before forking, so a reload would keep the old
code); with the listening socket held by systemd (deploy/systemd/controlplane-web.socket), no request is
refused while the new gunicorn starts: connections wait in the socket's queue.

The test holds the socket as systemd does and hands it over with systemd's protocol (LISTEN_FDS and
LISTEN_PID, the socket as file descriptor 3), to gunicorn started from deploy/gunicorn.conf.py.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest

from tests.conftest import BASE_DIR, subprocess_env, test_database_url

pytestmark = pytest.mark.django_db(transaction=True)


def start(listener: socket.socket, log, **env: str) -> subprocess.Popen:
    """gunicorn on the inherited socket, as systemd starts it: LISTEN_PID is its own pid (the shell's, which
    it becomes by exec), the socket its descriptor 3."""
    command = (
        f"LISTEN_PID=$$ LISTEN_FDS=1 exec {sys.executable} -m gunicorn -c deploy/gunicorn.conf.py"
        f" controlplane.wsgi --workers 2 3<&{listener.fileno()}"
    )
    return subprocess.Popen(
        ["/bin/bash", "-c", command],
        cwd=BASE_DIR,
        env=subprocess_env(DATABASE_URL=test_database_url(), **env),
        pass_fds=(listener.fileno(),),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def test_a_restart_refuses_no_request_while_systemd_holds_the_socket(tmp_path):
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    base = f"http://127.0.0.1:{listener.getsockname()[1]}"
    env = {"CONTROLPLANE_VAR_DIR": str(tmp_path), "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prometheus")}
    log = (tmp_path / "gunicorn.log").open("w")
    answers: list[int | str] = []
    stop = threading.Event()

    def client() -> None:
        """One request after another, each on a new connection, as nginx sends them."""
        while not stop.is_set():
            try:
                with urllib.request.urlopen(base + "/health/live", timeout=30) as response:
                    answers.append(response.status)
            except urllib.error.HTTPError as error:
                answers.append(error.code)
            except OSError as error:  # refused, reset: what nginx turns into a 502
                answers.append(type(error).__name__)
            time.sleep(0.01)

    first = start(listener, log, **env)
    second = None
    try:
        deadline = time.monotonic() + 60
        while True:  # the first one is up
            try:
                urllib.request.urlopen(base + "/health/live", timeout=2).read()
                break
            except OSError:
                assert time.monotonic() < deadline and first.poll() is None, (tmp_path / "gunicorn.log").read_text()
                time.sleep(0.2)
        calling = threading.Thread(target=client, daemon=True)
        calling.start()
        time.sleep(0.5)
        before = len(answers)
        first.send_signal(signal.SIGTERM)  # systemctl restart: stop, then start
        assert first.wait(timeout=30) == 0
        stopped_at = len(answers)
        second = start(listener, log, **env)
        deadline = time.monotonic() + 60
        while len(answers) < stopped_at + 20 and time.monotonic() < deadline:
            time.sleep(0.1)
        stop.set()
        calling.join(timeout=35)
    finally:
        for server in (first, second):
            if server is not None and server.poll() is None:
                server.send_signal(signal.SIGTERM)
                server.wait(timeout=30)
        listener.close()
        log.close()
    assert before > 0
    assert len(answers) >= stopped_at + 20, (tmp_path / "gunicorn.log").read_text()[-3000:]
    assert set(answers) == {200}, [answer for answer in answers if answer != 200]
    assert "Booting worker" in (tmp_path / "gunicorn.log").read_text()
