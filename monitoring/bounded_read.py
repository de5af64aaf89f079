"""Reading an HTTP answer's body within an overall deadline.

``urlopen(timeout=...)`` bounds each socket read, not the answer: a server trickling its body a byte
every half second keeps ``response.read(n)`` going as long as it trickles, whatever the timeout. Here
each read takes what has arrived (``read1``, in small chunks) with the socket's timeout set to the time
left before the deadline, so the whole body is read within it or TimeoutError is raised.
"""

from __future__ import annotations

import socket
import time
from typing import Any

CHUNK_BYTES = 64 * 1024


class BodyTooLarge(Exception):
    """The body is longer than the limit given."""


def _socket_of(response: Any) -> socket.socket | None:
    """The socket under an http.client.HTTPResponse (or an HTTPError wrapping one), if it can be found."""
    layer = response
    for _ in range(4):
        raw = getattr(layer, "raw", None)
        sock = getattr(raw, "_sock", None)
        if isinstance(sock, socket.socket):
            return sock
        layer = getattr(layer, "fp", None)
        if layer is None:
            return None
    return None


def read_within(response: Any, deadline: float, limit: int) -> bytes:
    """The body of ``response`` read until ``deadline`` (time.monotonic()) at the latest.

    TimeoutError when the deadline passes first; BodyTooLarge when more than ``limit`` bytes come.
    """
    sock = _socket_of(response)
    chunks: list[bytes] = []
    size = 0
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the answer did not end before the deadline")
        if sock is not None:
            sock.settimeout(left)
        chunk = response.read1(CHUNK_BYTES)
        if not chunk:
            break
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"more than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
