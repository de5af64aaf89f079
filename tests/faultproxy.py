"""A TCP proxy of the test's own between the control plane and a real service, to make faults.

    with FaultProxy("127.0.0.1", 6379) as proxy:     # REDIS_URL=redis://127.0.0.1:{proxy.port}/15
        proxy.refuse()   # new connections are refused (nothing listens), open ones are cut
        proxy.hang()     # connections are accepted and kept open, but no byte passes either way
        proxy.cut()      # every open connection is closed now; new ones pass as before
        proxy.heal()     # back to passing bytes both ways
        proxy.cut_after(65536)  # each new connection is cut once that many bytes went upstream (mid-upload)
        proxy.hold_after(65536)  # each new connection stops passing bytes once that many went upstream, until heal

The machine's shared services are never stopped: only the path through the proxy breaks. The proxy
listens on a fixed port for its whole life (refuse closes the listening socket and re-opens it on heal),
so URLs given to a process at its start stay valid.
"""

from __future__ import annotations

import select
import socket
import threading
import time
from typing import Self

PASS, HANG, REFUSE = "pass", "hang", "refuse"


class FaultProxy:
    def __init__(self, target_host: str, target_port: int, *, port: int = 0) -> None:
        self.target = (target_host, target_port)
        self.mode = PASS
        self.upstream_limit: int | None = None  # cut_after: bytes a connection may send upstream
        self.upstream_hold: int | None = None  # hold_after: bytes a connection sends upstream before it stalls
        self._lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._stopped = threading.Event()
        self._listener: socket.socket | None = None
        self.port = port
        self._listen()
        self._thread = threading.Thread(target=self._accept_loop, name="faultproxy", daemon=True)
        self._thread.start()

    # --- what a test calls --------------------------------------------------------------------

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def refuse(self) -> None:
        """Nothing listens on the port any more, and the open connections are closed."""
        with self._lock:
            self.mode = REFUSE
            listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        self.cut()

    def hang(self) -> None:
        """Connections are accepted and stay open, but nothing passes: a server that never answers."""
        with self._lock:
            was_refusing = self.mode == REFUSE
            self.mode = HANG
        if was_refusing:
            self._listen()

    def cut(self) -> None:
        """Close every open connection (both sides), as a network drop or a server restart would."""
        with self._lock:
            connections, self._connections = self._connections, set()
        for conn in connections:
            _close(conn)

    def cut_after(self, upstream_bytes: int) -> None:
        """Pass bytes, but close each connection once it sent ``upstream_bytes`` to the server: a network drop
        in the middle of an upload. ``heal`` lifts it."""
        with self._lock:
            self.upstream_limit = upstream_bytes

    def hold_after(self, upstream_bytes: int) -> None:
        """Pass bytes, but stop passing any (either way) on each connection once it sent ``upstream_bytes`` to
        the server, keeping it open: an upload stalled in its middle. ``heal`` lets the rest through."""
        with self._lock:
            self.upstream_hold = upstream_bytes

    def heal(self) -> None:
        with self._lock:
            self.upstream_limit = None
            self.upstream_hold = None
            was_refusing = self.mode == REFUSE
            self.mode = PASS
        if was_refusing:
            self._listen()

    def close(self) -> None:
        self._stopped.set()
        self.refuse()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the proxy itself -----------------------------------------------------------------------

    def _listen(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        for _ in range(50):  # the port may linger for a moment after a refuse()
            try:
                listener.bind(("127.0.0.1", self.port))
                break
            except OSError:
                time.sleep(0.1)
        else:
            listener.bind(("127.0.0.1", self.port))
        # Small receive buffers (the accepted connections inherit them): a held connection stalls its
        # sender after little more than the bytes it let through.
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        listener.listen(128)
        listener.settimeout(0.2)
        self.port = listener.getsockname()[1]
        with self._lock:
            self._listener = listener

    def _accept_loop(self) -> None:
        while not self._stopped.is_set():
            listener = self._listener
            if listener is None:
                time.sleep(0.05)
                continue
            try:
                client, _ = listener.accept()
            except (TimeoutError, OSError):
                continue
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        with self._lock:
            self._connections.add(client)
        if self.mode == HANG:
            return  # held open by the set above until cut() or close()
        try:
            upstream = socket.create_connection(self.target, timeout=5)
        except OSError:
            self._drop(client)
            return
        with self._lock:
            self._connections.add(upstream)
        pair = {client: upstream, upstream: client}
        sent_upstream = 0
        try:
            while not self._stopped.is_set():
                try:
                    readable, _, _ = select.select(list(pair), [], [], 0.2)
                except (OSError, ValueError):
                    break  # a socket was closed by cut()
                if self.mode == HANG:
                    continue  # stop passing bytes on open connections too
                hold = self.upstream_hold
                if hold is not None and sent_upstream >= hold:
                    time.sleep(0.05)  # stalled: nothing read, so the sender's buffers fill and it blocks
                    continue
                done = False
                for sock in readable:
                    try:
                        data = sock.recv(65536)
                    except OSError:
                        data = b""
                    if not data:
                        done = True
                        break
                    limit = self.upstream_limit
                    if sock is client and limit is not None:
                        if sent_upstream + len(data) > limit:
                            data = data[: max(limit - sent_upstream, 0)]
                            done = True  # what fits goes, then the connection is cut
                    if sock is client:
                        sent_upstream += len(data)
                    try:
                        pair[sock].sendall(data)
                    except OSError:
                        done = True
                        break
                    if done:
                        break
                if done:
                    break
        finally:
            self._drop(client)
            self._drop(upstream)

    def _drop(self, conn: socket.socket) -> None:
        with self._lock:
            self._connections.discard(conn)
        _close(conn)


def _close(conn: socket.socket) -> None:
    try:
        conn.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    conn.close()
