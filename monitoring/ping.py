"""The job monitors' ping endpoint: ``/ping/<uuid>[/start|/fail|/<exit status>]``, GET or POST.

The URL is the credential: no token, no login, no session, no CSRF. Answers are plain text, so a
shell script's ``curl -fsS`` shows them as they are. The hot path touches neither the database nor a
cache file: the key is looked up in an in-process copy of the keys and the ping is appended to the ping
buffer (``monitoring.job_monitors.job_ping``), applied to its monitor by a flush.
"""

from __future__ import annotations

import uuid

from django.contrib.auth.decorators import login_not_required
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt

from monitoring.job_monitors import OUTPUT_LIMIT_BYTES, PingRateLimited, job_ping, output_text
from monitoring.jobs import PING_FAIL, PING_START, PING_SUCCESS, kind_of_exit_status
from monitoring.ping_buffer import BufferedPing

ALLOWED_METHODS = ("GET", "HEAD", "POST")


def _text(body: str, status: int) -> HttpResponse:
    response = HttpResponse(body + "\n", status=status, content_type="text/plain; charset=utf-8")
    response["Cache-Control"] = "no-store"
    return response


def _kind(action: str) -> tuple[str, int | None] | None:
    if action == "":
        return PING_SUCCESS, None
    if action == "start":
        return PING_START, None
    if action == "fail":
        return PING_FAIL, None
    if action.isascii() and action.isdigit() and len(action) <= 3 and int(action) <= 255:
        status = int(action)
        return kind_of_exit_status(status), status
    return None


def _body(request: HttpRequest) -> str | None:
    if request.method != "POST":
        return None
    try:
        total = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        total = 0
    # Read past the limit by one byte only: a large body is never held in memory.
    body = request.read(OUTPUT_LIMIT_BYTES + 1) if total else b""
    return output_text(body, max(total, len(body)))


@csrf_exempt
@login_not_required
def ping(request: HttpRequest, key: str, action: str = "") -> HttpResponse:
    if request.method not in ALLOWED_METHODS:
        response = _text("method not allowed: GET or POST", 405)
        response["Allow"] = ", ".join(ALLOWED_METHODS)
        return response
    try:
        ping_key = uuid.UUID(key)
    except ValueError:
        return _text("not found", 404)
    kind = _kind(action)
    if kind is None:
        return _text("bad ping: /start, /fail or an exit status from 0 to 255", 400)
    received = BufferedPing(timezone.now(), ping_key, kind[0], kind[1], _body(request))
    try:
        known = job_ping(ping=received)
    except PingRateLimited:
        response = _text("rate limited: too many pings for this monitor", 429)
        response["Retry-After"] = "1"
        return response
    return _text("OK", 200) if known else _text("not found", 404)


@csrf_exempt
@login_not_required
def not_found(request: HttpRequest) -> HttpResponse:
    """Any other path under /ping/ (no key, a key with more than one part after it)."""
    return _text("not found", 404)
