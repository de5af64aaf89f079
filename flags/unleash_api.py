"""Unleash's client API (``/api/client/...``) and frontend API (``/api/frontend``) over the flags.

Client API: ``GET features`` (the token's environment as Unleash's version 2 document, ETag and
``If-None-Match`` answered 304 from the snapshot's digest without serialising), ``POST register`` and
``POST metrics`` (202; a body that cannot be read is 400 and stores nothing). Scope ``flags:read``.

Frontend API: ``GET`` (context as query parameters, as unleash-proxy-client sends it) or ``POST``
(``{"context": {...}}``) answers ``{"toggles": [...]}``, the enabled flags for that context with their
variant. Scope ``flags:frontend``, which can do nothing else: its token ships in a browser. CORS for the
origins in ``FLAGS_FRONTEND_ORIGINS`` (preflight answered without a token, as browsers send it).

Unleash's SDKs send the token in ``Authorization`` without a scheme: these paths accept that (and
``Bearer``), and only these. The environment is always the token's (``controlplane.context``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.http import HttpRequest, HttpResponse
from django.utils.cache import patch_vary_headers
from django.views.decorators.csrf import csrf_exempt

from controlplane.api import ApiError, api_view, json_body
from controlplane.context import token_environment
from controlplane.models import DEFAULT_FLAGS_ENVIRONMENT, Environment, Scope
from flags.snapshot import current
from flags.unleash import context_from_query, features_body, features_etag, frontend_context, frontend_toggles
from flags.usage import sdk_register, usage_record


def _environment_name(request: HttpRequest) -> str:
    return token_environment(request) or DEFAULT_FLAGS_ENVIRONMENT


def _environment(request: HttpRequest) -> Environment:
    return Environment.objects.ensure(_environment_name(request))


def _not_modified(etag: str) -> HttpResponse:
    response = HttpResponse(status=304)
    del response["Content-Type"]  # a 304 has no body, so no type for one
    response["ETag"] = etag
    return response


def _matches(if_none_match: str, etag: str) -> bool:
    candidates = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
    return etag in candidates or "*" in candidates


def _accepted(body: dict[str, Any] | None = None) -> HttpResponse:
    return HttpResponse(json.dumps(body or {}), status=202, content_type="application/json")


# --- Client API -------------------------------------------------------------------------------------


@api_view(scope=Scope.FLAGS_READ, allow_api_key=False, allow_bare=True)
def client_features(request: HttpRequest) -> HttpResponse:
    snap = current()
    environment = _environment_name(request)
    etag = features_etag(snap, environment)
    if_none_match = request.META.get("HTTP_IF_NONE_MATCH")
    if if_none_match and _matches(if_none_match, etag):
        return _not_modified(etag)
    response = HttpResponse(features_body(snap, environment), content_type="application/json")
    response["ETag"] = etag
    return response


@api_view(scope=Scope.FLAGS_READ, methods=("POST",), allow_api_key=False, allow_bare=True)
def client_register(request: HttpRequest) -> HttpResponse:
    sdk_register(environment=_environment(request), data=json_body(request))
    return _accepted()


@api_view(scope=Scope.FLAGS_READ, methods=("POST",), allow_api_key=False, allow_bare=True)
def client_metrics(request: HttpRequest) -> HttpResponse:
    data = json_body(request)
    environment = _environment(request)
    known = frozenset(current().flags_in(environment.name))
    return _accepted({"counted": usage_record(environment=environment, data=data, known=known)})


# --- Frontend API -----------------------------------------------------------------------------------

_CORS_METHODS = "GET, POST, OPTIONS"
_CORS_MAX_AGE = "86400"


def _allowed_origin(request: HttpRequest) -> str | None:
    origin = request.META.get("HTTP_ORIGIN")
    if not origin:
        return None
    allowed = settings.FLAGS_FRONTEND_ORIGINS
    if origin in allowed:
        return origin
    return "*" if "*" in allowed else None


def _with_cors(view: Callable[[HttpRequest], HttpResponse]) -> Callable[[HttpRequest], HttpResponse]:
    """CORS for the product's origins: the preflight (OPTIONS, which carries no token) answered here,
    and every answer, errors included, readable by the page that asked."""

    def wrapped(request: HttpRequest) -> HttpResponse:
        origin = _allowed_origin(request)
        if request.method == "OPTIONS":
            response = HttpResponse(status=204)
            del response["Content-Type"]
            if origin is not None:
                response["Access-Control-Allow-Methods"] = _CORS_METHODS
                requested = request.META.get("HTTP_ACCESS_CONTROL_REQUEST_HEADERS", "")
                response["Access-Control-Allow-Headers"] = requested or "Authorization, Content-Type"
                response["Access-Control-Max-Age"] = _CORS_MAX_AGE
        else:
            response = view(request)
        if origin is not None:
            response["Access-Control-Allow-Origin"] = origin
            response["Access-Control-Expose-Headers"] = "ETag"
        patch_vary_headers(response, ["Origin"])
        return response

    return csrf_exempt(login_not_required(wrapped))


def _frontend_etag(digest: str, environment: str, context: dict[str, Any]) -> str:
    canonical = json.dumps([environment, context], sort_keys=True, separators=(",", ":"))
    return f'"{digest}-{hashlib.blake2b(canonical.encode(), digest_size=8).hexdigest()}"'


@api_view(scope=Scope.FLAGS_FRONTEND, methods=("GET", "POST"), allow_api_key=False, allow_bare=True)
def _frontend(request: HttpRequest) -> HttpResponse:
    if request.method == "POST":
        body = json_body(request, allow_empty=True)
        raw = body.get("context") if "context" in body else body
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise ApiError(400, "invalid_context", "context must be an object", field="context")
    else:
        raw = context_from_query(dict(request.GET.lists()))
    context = frontend_context(raw)
    snap = current()
    environment = _environment_name(request)
    etag = _frontend_etag(snap.digest, environment, context)
    if_none_match = request.META.get("HTTP_IF_NONE_MATCH")
    if if_none_match and _matches(if_none_match, etag):
        return _not_modified(etag)
    body_out = json.dumps({"toggles": frontend_toggles(snap, environment, context)}, separators=(",", ":"))
    response = HttpResponse(body_out, content_type="application/json")
    response["ETag"] = etag
    return response


frontend = _with_cors(_frontend)


@api_view(scope=Scope.FLAGS_FRONTEND, methods=("POST",), allow_api_key=False, allow_bare=True)
def _frontend_register(request: HttpRequest) -> HttpResponse:
    sdk_register(environment=_environment(request), data=json_body(request))
    return _accepted()


@api_view(scope=Scope.FLAGS_FRONTEND, methods=("POST",), allow_api_key=False, allow_bare=True)
def _frontend_metrics(request: HttpRequest) -> HttpResponse:
    data = json_body(request)
    environment = _environment(request)
    known = frozenset(current().flags_in(environment.name))
    return _accepted({"counted": usage_record(environment=environment, data=data, known=known)})


frontend_register = _with_cors(_frontend_register)
frontend_metrics = _with_cors(_frontend_metrics)
