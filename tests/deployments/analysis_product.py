"""The demo product (demo_product/) served on a free port for the analysis tests, registered as a service.

Its traffic is the product's own (``DemoProduct.tick``: a seeded second of requests as the version deployed
now serves them), driven faster than once a second by a thread so that a test judges hundreds of
requests in a few seconds. Its flag lookups go to a closed port: ``matching_v2_algorithm`` counts as off.
"""

from __future__ import annotations

import threading
from http.server import ThreadingHTTPServer
from pathlib import Path

from demo_product.server import Config, DemoProduct, Flags
from deployments.demo import record

CLOSED = "http://127.0.0.1:9"  # the discard port: nothing listens on it here


class Product:
    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.releases = directory / "releases"
        config = Config(
            port=0, control_plane_url=CLOSED, token="cpt_none", ping_path="/ping/none", releases_file=self.releases
        )
        self.app = DemoProduct(config, flags=Flags(CLOSED, "cpt_none", timeout=0.2))
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self.app.handler())
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.metrics_url = f"http://127.0.0.1:{self.port}/metrics"
        self._serving = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self._serving.start()
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    def deploy(self, version: str) -> None:
        """What the demo pipeline's backend step does: the product serves ``version`` from its next tick."""
        record(self.releases, "backend", version)

    def seconds_of_traffic(self, seconds: int) -> int:
        return sum(self.app.tick() for _ in range(seconds))

    def start_traffic(self, every: float = 0.005) -> None:
        """A second of the product's traffic every ``every`` seconds, until stopped."""

        def tick() -> None:
            while not self._stop.wait(every):
                self.app.tick()

        self._ticker = threading.Thread(target=tick, daemon=True)
        self._ticker.start()

    def stop_traffic(self) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
        self._stop = threading.Event()
        self._ticker = None

    def close(self) -> None:
        self.stop_traffic()
        self.server.shutdown()
        self.server.server_close()
