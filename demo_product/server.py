"""The demo product's process: an HTTP server on 127.0.0.1, its own traffic each second, and a job that pings
the control plane every minute (``python -m demo_product --config VAR_DIR/demo-product/config.json``).

``manage.py ensure_demo_product`` writes the configuration (the port, the control plane's URL, a
flags:read token and the job monitor's ping path; readable by its owner only). The version comes from
the releases file the demo pipeline's backend step writes, read again each second.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from demo_product.traffic import V2_FLAG, Metrics, behaviour, generate, requests_this_second

INITIAL_VERSION = "v0"
FLAG_TTL_SECONDS = 5.0
JOB_PERIOD_SECONDS = 60.0


def say(message: str) -> None:
    print(f"demo product: {message}", flush=True)  # noqa: T201 - a process of make run: its lines are its log


@dataclass(frozen=True)
class Config:
    port: int
    control_plane_url: str
    token: str
    ping_path: str
    releases_file: Path
    seed: int = 17

    @classmethod
    def load(cls, path: Path) -> Config:
        data = json.loads(path.read_text())
        return cls(
            port=int(data["port"]),
            control_plane_url=str(data["control_plane_url"]).rstrip("/"),
            token=str(data["token"]),
            ping_path=str(data["ping_path"]),
            releases_file=Path(data["releases_file"]),
            seed=int(data.get("seed", 17)),
        )


def current_version(releases_file: Path) -> str:
    """The last line of the releases file (what the demo pipeline deployed last), or v0 before any."""
    try:
        lines = [line.strip() for line in releases_file.read_text().splitlines() if line.strip()]
    except (FileNotFoundError, UnicodeDecodeError):
        return INITIAL_VERSION
    return lines[-1] if lines else INITIAL_VERSION


class Flags:
    """``matching_v2_algorithm`` per user over OFREP, each answer kept FLAG_TTL_SECONDS; off when unreachable."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        ttl: float = FLAG_TTL_SECONDS,
        timeout: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = f"{base_url.rstrip('/')}/ofrep/v1/evaluate/flags/{V2_FLAG}"
        self._token, self._ttl, self._timeout, self._clock = token, ttl, timeout, clock
        self._answers: dict[str, tuple[float, bool]] = {}
        self._failing = False
        self.calls = 0

    def is_on(self, user: str) -> bool:
        now = self._clock()
        cached = self._answers.get(user)
        if cached is not None and cached[0] > now:
            return cached[1]
        value = self._ask(user)
        self._answers[user] = (now + self._ttl, value)
        return value

    def _ask(self, user: str) -> bool:
        self.calls += 1
        body = json.dumps({"context": {"targetingKey": user}}).encode()
        request = urllib.request.Request(  # noqa: S310 - the control plane's own http URL, from our config
            self.url,
            data=body,
            method="POST",
            headers={"Authorization": f"Bearer {self._token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as response:  # noqa: S310
                answer: Any = json.load(response)
        except (OSError, ValueError) as exc:
            status = exc.code if isinstance(exc, urllib.error.HTTPError) else None
            if not self._failing:
                self._failing = True
                why = f"HTTP {status}" if status else type(exc).__name__
                say(f"flags: no answer from the control plane ({why}); {V2_FLAG} counts as off meanwhile")
            return False
        if self._failing:
            self._failing = False
            say("flags: the control plane answers again")
        return isinstance(answer, dict) and answer.get("value") is True


class DemoProduct:
    def __init__(self, config: Config, *, flags: Flags | None = None) -> None:
        self.config = config
        self.metrics = Metrics()
        self.flags = flags or Flags(config.control_plane_url, config.token)
        self.rng = random.Random(config.seed)  # noqa: S311 - a simulation, not a secret
        self.version = current_version(config.releases_file)
        self.stop = threading.Event()

    def tick(self) -> int:
        """One second of traffic, as the version deployed now serves it."""
        version = current_version(self.config.releases_file)
        if version != self.version:
            say(f"now serving {version} (was {self.version})")
            self.version = version
        requests = generate(self.rng, requests_this_second(self.rng), behaviour(version), self.flags.is_on)
        return self.metrics.observe_all(requests)

    def run_traffic(self) -> None:
        while not self.stop.wait(1.0):
            self.tick()

    def run_job(self) -> None:
        """The product's minute job (refreshing match suggestions): start and success pings, like a cron wrapper."""
        while not self.stop.is_set():
            started = time.monotonic()
            self._ping("/start")
            if self.stop.wait(self.rng.uniform(0.5, 2.0)):
                return
            self._ping("", body=f"refreshed match suggestions ({self.version})\n".encode())
            self.stop.wait(max(0.0, JOB_PERIOD_SECONDS - (time.monotonic() - started)))

    def _ping(self, action: str, body: bytes | None = None) -> None:
        url = f"{self.config.control_plane_url}{self.config.ping_path}{action}"
        request = urllib.request.Request(url, data=body, method="POST" if body else "GET")  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=5):  # noqa: S310
                pass
        except OSError as exc:
            if not self.stop.is_set():
                say(f"job: the ping was not delivered ({type(exc).__name__})")

    def health(self) -> dict[str, str]:
        return {"status": "ok", "version": self.version}

    def handler(self) -> type[BaseHTTPRequestHandler]:
        product = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "wingmanmatch-demo"

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                started = time.perf_counter()
                if self.path == "/metrics":  # not instrumented, as instrumentator's users usually exclude it
                    self._answer(200, generate_latest(product.metrics.registry), CONTENT_TYPE_LATEST)
                    return
                if self.path == "/api/health":
                    self._answer(200, json.dumps(product.health()).encode(), "application/json")
                    product.metrics.observe("/api/health", "GET", 200, time.perf_counter() - started)
                    return
                self._answer(404, b'{"detail":"Not Found"}', "application/json")

            def _answer(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
                pass  # a scrape every 15 s and a health check each run: no line each

        return Handler


def _idle(reason: str) -> int:
    """Stay up doing nothing, so that honcho does not stop the control plane with us; end on SIGTERM/SIGINT."""
    say(reason)
    stopped = threading.Event()
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, lambda *_: stopped.set())
    stopped.wait()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m demo_product", description=__doc__)
    parser.add_argument("--config", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        config = Config.load(args.config)
    except FileNotFoundError:
        return _idle(f"no {args.config} (manage.py ensure_demo_product writes it): not started")
    product = DemoProduct(config)
    try:
        server = ThreadingHTTPServer(("127.0.0.1", config.port), product.handler())
    except OSError as exc:
        return _idle(f"cannot listen on 127.0.0.1:{config.port} ({exc.strerror}); set DEMO_PRODUCT_PORT")
    server.daemon_threads = True

    def stop(*_: object) -> None:
        product.stop.set()
        threading.Thread(target=server.shutdown, daemon=True).start()

    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, stop)
    threading.Thread(target=product.run_traffic, name="traffic", daemon=True).start()
    threading.Thread(target=product.run_job, name="job", daemon=True).start()
    say(f"WingmanMatch (demo) {product.version} on http://127.0.0.1:{config.port} (/api/health, /metrics)")
    server.serve_forever(poll_interval=0.5)
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
