"""A service's /metrics on 127.0.0.1 for the scrape tests: the text under prometheus-fastapi-instrumentator's
names, and the test serves requests, restarts the process (counters
begin again) or makes the endpoint fail in the ways a real one does."""

from __future__ import annotations

import math
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# prometheus-fastapi-instrumentator's default metrics: the request counter by handler, method and
# status class, and the latency histogram by handler and method with its low-resolution buckets.
LATENCY_BUCKETS = (0.1, 0.5, 1.0)


class App:
    """The instrumented process: its counters live as long as it does.

    The text is written here as prometheus-client writes it (HELP, TYPE, the _created gauges), rather
    than by prometheus-client itself, whose values the control plane's settings put in shared
    multiprocess files: a restart here must begin every counter again from zero.
    """

    def __init__(self) -> None:
        self.restart()

    def restart(self) -> None:
        """A new process: every counter begins again from zero."""
        self.started = time.time()
        self.requests: dict[tuple[str, str, str], int] = {}
        self.buckets: dict[tuple[str, str], list[int]] = {}
        self.sums: dict[tuple[str, str], float] = {}

    def serve(self, count: int, *, handler: str = "/api/match", status: int = 200, seconds: float = 0.05) -> None:
        key = (handler, "GET", f"{status // 100}xx")
        self.requests[key] = self.requests.get(key, 0) + count
        buckets = self.buckets.setdefault((handler, "GET"), [0] * (len(LATENCY_BUCKETS) + 1))
        for index, bound in enumerate((*LATENCY_BUCKETS, math.inf)):
            if seconds <= bound:
                buckets[index] += count
        self.sums[(handler, "GET")] = self.sums.get((handler, "GET"), 0.0) + seconds * count

    def text(self) -> bytes:
        lines = [
            "# HELP http_requests_total Total number of requests by method, status and handler.",
            "# TYPE http_requests_total counter",
        ]
        for (handler, method, status), count in self.requests.items():
            lines.append(f'http_requests_total{{handler="{handler}",method="{method}",status="{status}"}} {count}.0')
        lines.append("# TYPE http_requests_created gauge")
        for handler, method, status in self.requests:
            labels = f'handler="{handler}",method="{method}",status="{status}"'
            lines.append(f"http_requests_created{{{labels}}} {self.started}")
        lines += [
            "# HELP http_request_duration_seconds Latency with only few buckets by handler.",
            "# TYPE http_request_duration_seconds histogram",
        ]
        for (handler, method), counts in self.buckets.items():
            for bound, count in zip((*LATENCY_BUCKETS, "+Inf"), counts, strict=True):
                labels = f'handler="{handler}",le="{bound}",method="{method}"'
                lines.append(f"http_request_duration_seconds_bucket{{{labels}}} {count}.0")
            labels = f'handler="{handler}",method="{method}"'
            lines.append(f"http_request_duration_seconds_count{{{labels}}} {counts[-1]}.0")
            lines.append(f"http_request_duration_seconds_sum{{{labels}}} {self.sums[(handler, method)]}")
        lines += ["# HELP process_cpu_seconds_total CPU.", "# TYPE process_cpu_seconds_total counter"]
        lines.append(f"process_cpu_seconds_total {time.process_time()}")
        return ("\n".join(lines) + "\n").encode()


@dataclass
class Exporter:
    """Serves ``app``'s text, or ``body`` when set; ``status`` other than 200 answers that status;
    ``mode`` "close" closes the connection without answering, "truncate" sends half an answer."""

    app: App = field(default_factory=App)
    body: bytes | None = None
    status: int = 200
    mode: str = "answer"
    headers: list[dict[str, str]] = field(default_factory=list)

    def start(self) -> Exporter:
        exporter = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                exporter.headers.append(dict(self.headers))
                body = exporter.body if exporter.body is not None else exporter.app.text()
                if exporter.mode == "close":
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                self.send_response(exporter.status)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if exporter.mode == "truncate":
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/metrics"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Trickler:
    """An HTTP server that sends its headers at once and then its body a byte at a time, one byte every
    ``pause`` seconds, for ``size`` bytes: a body that takes ``size * pause`` seconds. ``sent_all`` is set
    just before the last byte goes out; a client that gave up earlier makes the server stop."""

    def __init__(self, size: int = 200, pause: float = 0.1) -> None:
        self.size, self.pause = size, pause
        self.sent_all = threading.Event()
        self.started = threading.Event()

    def start(self) -> Trickler:
        trickler = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(trickler.size))
                self.end_headers()
                self.wfile.flush()
                trickler.started.set()
                try:
                    for index in range(trickler.size):
                        if index == trickler.size - 1:
                            trickler.sent_all.set()  # before the last byte: a client with the body saw it set
                        self.wfile.write(b"#")
                        self.wfile.flush()
                        time.sleep(trickler.pause)
                except OSError:
                    return  # the client went away

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
