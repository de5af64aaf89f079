"""The client's address: the peer itself, or the entry a trusted proxy recorded in X-Forwarded-For.

django-axes locks out a user-and-address pair, so this address decides whose failed logins count
together. Behind a proxy the peer is the proxy (every login would come from 127.0.0.1 and five bad
passwords from anyone would lock the user out for everyone); without one, X-Forwarded-For is whatever
the client wrote (trusting it would let an attacker take a new address for every attempt).

``TRUSTED_PROXY_COUNT`` = N proxies in front, each appending the address of the peer it served (nginx's
``$proxy_add_x_forwarded_for``). The last of them is the peer (``REMOTE_ADDR``); the N entries it and
the others appended are the right-most N, and the left-most of those is the client's: the N-th entry
from the right. Entries further left came from the client and are never read. A header missing, too
short or holding something other than an address there gives the peer's address.
"""

from __future__ import annotations

from ipaddress import ip_address

from django.conf import settings
from django.http import HttpRequest


def _valid(text: str) -> str | None:
    try:
        return str(ip_address(text.strip()))
    except ValueError:
        return None


def client_ip(request: HttpRequest) -> str:
    """The address django-axes (``AXES_CLIENT_IP_CALLABLE``) and the login audit events record."""
    peer = request.META.get("REMOTE_ADDR", "")
    count = settings.TRUSTED_PROXY_COUNT
    if count <= 0:
        return peer
    entries = request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")
    if len(entries) < count:
        # Fewer entries than proxies: the request did not come through the configured chain, and no
        # entry can be told apart from one the client wrote.
        return peer
    # A proxy appends a bare address; anything else means the chain is not as configured, and the
    # peer is the one address known to be real (the attempts table stores an IP address column).
    return _valid(entries[-count]) or peer
