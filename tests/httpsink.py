"""A local HTTP server that stands in for Sentry, Slack or a webhook and keeps what it received."""

from __future__ import annotations

import gzip
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def envelope_items(self) -> list[dict[str, Any]]:
        """Sentry envelope: header line, then (item header, payload) line pairs."""
        lines = [line for line in self.body.split(b"\n") if line.strip()]
        items = []
        for line in lines[1:]:
            try:
                items.append(json.loads(line))
            except ValueError:
                continue
        return items


@dataclass
class HttpSink:
    status: int = 200
    body: bytes = b"ok: WingmanMatch API"
    requests: list[Received] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)  # sent with each GET answer (a Location)

    def start(self) -> HttpSink:
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                sink.requests.append(Received("POST", self.path, dict(self.headers), body))
                self.send_response(sink.status)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b"{}")

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                sink.requests.append(Received("GET", self.path, dict(self.headers), b""))
                self.send_response(sink.status)
                self.send_header("Content-Type", "text/plain")
                for name, value in sink.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(sink.body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def wait_for(self, predicate, seconds: float = 10) -> list[Received]:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            matched = [r for r in list(self.requests) if predicate(r)]
            if matched:
                return matched
            time.sleep(0.05)
        return []
