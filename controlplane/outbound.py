"""Outbound HTTP the control plane makes (webhooks, endpoint probes, deployment steps): no redirects.

A 3xx is the far side's answer. Following it would send a body, or credentials, to an address the
operator never named, so every outbound request goes through ``opener``, which reports it instead.
"""

from __future__ import annotations

import urllib.request
from typing import Any


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


opener = urllib.request.build_opener(_NoRedirect)
