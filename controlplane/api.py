"""The JSON API's shared parts: token authentication with scopes, typed errors, JSON bodies.

``authenticate`` is the one place where a token is read and checked: OFREP's and /metrics' views call it
through ``api_view``, the operations API through its ninja auth (``controlplane.openapi``).
Under /api/ and /ofrep/ every error is JSON, including the ones Django answers itself (unknown path,
bad Host, body over the limit, 500): ``bad_request``, ``page_not_found`` and ``server_error`` are the
URL conf's error handlers.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.core.exceptions import DisallowedHost, RequestDataTooBig, TooManyFieldsSent
from django.db import InterfaceError, OperationalError
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from django.views.decorators.csrf import csrf_exempt

from controlplane.context import note_token
from controlplane.errors import ControlPlaneError
from controlplane.localcopy import LocalCopyUnavailable
from controlplane.models import ApiToken
from controlplane.services import api_token_authenticate

logger = logging.getLogger(__name__)

# Names a token might be passed under in a URL: refused, since URLs end up in logs and histories.
_QUERY_TOKEN_NAMES = {"token", "access_token", "api_key", "apikey", "key", "auth", "bearer"}

API_PREFIX = "/api/"
OFREP_PREFIX = "/ofrep/"

# OFREP's error documents carry one of the protocol's codes; ours map onto them, the rest is GENERAL.
_OFREP_CODES = {"invalid_json": "PARSE_ERROR", "invalid_text": "INVALID_CONTEXT", "too_many_fields": "PARSE_ERROR"}
# Seconds a client is asked to wait after a 503 (the process tries the database again every second).
RETRY_AFTER_SECONDS = 5


class ApiError(Exception):
    """A failure with an HTTP status and a JSON body: ``{"error": code, "detail": ..., "field": ...}``."""

    def __init__(self, status: int, code: str, detail: str, *, field: str | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.field = field
        self.extra = extra

    def response(self, *, ofrep: bool = False) -> JsonResponse:
        """The JSON answer; in OFREP's shape (``errorCode``, ``errorDetails``) for the OFREP endpoints."""
        body: dict[str, Any]
        if ofrep:
            body = {"errorCode": _OFREP_CODES.get(self.code, "GENERAL"), "errorDetails": self.detail}
        else:
            body = {"error": self.code, "detail": self.detail}
            if self.field:
                body["field"] = self.field
            body.update(self.extra)
        response = JsonResponse(body, status=self.status)
        if self.status == 401:
            response["WWW-Authenticate"] = 'Bearer realm="controlplane"'
        elif self.status == 503:
            response["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response


def _raw_token(request: HttpRequest, *, allow_api_key: bool, allow_bare: bool = False) -> str | None:
    # META, not request.headers: building the header mapping costs more than the rest of the check.
    authorization = request.META.get("HTTP_AUTHORIZATION", "")
    if authorization:
        scheme, _, value = authorization.strip().partition(" ")
        if allow_bare and not value and scheme:  # Unleash's SDKs send the token alone
            return scheme
        if scheme.lower() != "bearer" or not value.strip():
            expected = "'<token>' or 'Bearer <token>'" if allow_bare else "'Bearer <token>'"
            raise ApiError(401, "unauthorized", f"Authorization must be {expected}")
        return value.strip()
    if allow_api_key:
        api_key = request.META.get("HTTP_X_API_KEY", "").strip()
        if api_key:
            return api_key
    return None


def authenticate(
    request: HttpRequest, scope: str | None, *, allow_api_key: bool = True, allow_bare: bool = False
) -> ApiToken:
    """The request's token, or raise 400 (token in the URL), 401 (none, unknown) or 403 (scope).

    ``scope`` None accepts a token of any scope. ``allow_bare`` also takes ``Authorization: <token>``
    without a scheme, as Unleash's SDKs send it (their paths only). The operations API's views read the token ninja kept
    from its auth (``controlplane.openapi.token_of``); the request's log line names it (``note_token``).
    """
    if _QUERY_TOKEN_NAMES & {name.lower() for name in request.GET}:
        raise ApiError(400, "token_in_query_string", "send the token in the Authorization header, never in the URL")
    raw = _raw_token(request, allow_api_key=allow_api_key, allow_bare=allow_bare)
    if raw is None:
        raise ApiError(401, "unauthorized", "an API token is required: Authorization: Bearer <token>")
    token = api_token_authenticate(raw)
    if token is None:
        raise ApiError(401, "unauthorized", "the token is unknown, expired or revoked")
    if scope is not None and not token.has_scope(scope):
        raise ApiError(403, "forbidden", f"the token lacks the scope {scope}", scope=scope)
    note_token(request, token.name, token.environment.name if token.environment is not None else None)
    return token


def error_for(request: HttpRequest, exc: BaseException) -> ApiError | None:
    """The API's answer to ``exc``, or None for an exception that is a bug (Django's 500 handles it)."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, ControlPlaneError):  # the services' vocabulary, mapped here once
        return ApiError(exc.status, exc.code, exc.message, field=exc.field, **exc.extra)
    if isinstance(exc, Http404):  # get_object_or_404 and friends: Django would answer with its HTML page
        return ApiError(404, "not_found", str(exc) or "no such object")
    if isinstance(exc, RequestDataTooBig):  # raised when the view first reads request.body
        return _too_large()
    if isinstance(exc, TooManyFieldsSent):
        return _too_many_fields()
    if isinstance(exc, LocalCopyUnavailable):  # a fresh process, no database and no copy on disk (logged there)
        return ApiError(503, "unavailable", "the database cannot be read; try again shortly")
    if isinstance(exc, (OperationalError, InterfaceError)):
        # The database refused, dropped or timed out (a write during an outage): a 503 that says so,
        # which callers retry, rather than a 500 with a traceback.
        logger.error("%s %s: the database does not answer: %s", request.method, request.path, exc)
        return ApiError(503, "database_unavailable", "the database does not answer; try again shortly")
    return None


def api_view(
    *, scope: str, methods: tuple[str, ...] = ("GET",), allow_api_key: bool = True, allow_bare: bool = False
) -> Callable[[Callable[..., HttpResponse]], Callable[..., HttpResponse]]:
    """Wrap a JSON view: method check, token with ``scope``, and ApiError mapped to its response.

    Token-authenticated requests carry no cookie, so CSRF does not apply, and they need no login.
    """

    def decorate(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @functools.wraps(view)
        def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            try:
                if request.method not in methods:
                    raise ApiError(405, "method_not_allowed", f"use {' or '.join(methods)}")
                authenticate(request, scope, allow_api_key=allow_api_key, allow_bare=allow_bare)
                for name, value in kwargs.items():
                    if isinstance(value, str) and not is_text(value):
                        raise ApiError(400, "invalid_text", f"{name} is not valid Unicode text", field=name)
                return view(request, *args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - mapped to its answer, or raised again as a bug
                mapped = error_for(request, exc)
                if mapped is None:
                    raise
                error = mapped
            response = error.response(ofrep=request.path_info.startswith(OFREP_PREFIX))
            if error.status == 405:
                response["Allow"] = ", ".join(methods)
            return response

        return csrf_exempt(login_not_required(wrapped))

    return decorate


class InvalidJson(ValueError):
    """The body is not JSON we can read: a syntax error, or nesting deeper than the parser's stack."""


class InvalidText(ValueError):
    """A string in the body (a key or a value) holds a lone surrogate: it is not Unicode text.

    ``json.loads`` turns ``"\\ud800"`` (and UTF-8-encoded surrogates) into such a string; it cannot be
    encoded, so it would fail, or worse, wherever it goes next: a hash, an ETag, a log line, the database.
    """

    def __init__(self, field: str) -> None:
        super().__init__(f"{field} is not valid Unicode text")
        self.field = field


def is_text(value: str) -> bool:
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def _printable(name: str) -> str:
    return name if is_text(name) else name.encode("utf-8", "backslashreplace").decode()


def _first_non_text(data: Any) -> str | None:
    """The dotted path to the first string in ``data`` that is not text, or None. A loop, not recursion:
    the parser accepts nesting about as deep as Python's stack, which leaves no room to recurse here."""
    pending: list[tuple[Any, tuple[str, ...]]] = [(data, ())]
    while pending:
        value, path = pending.pop()
        if isinstance(value, str):
            if not is_text(value):
                return ".".join(path) or "body"
        elif isinstance(value, dict):
            for key, item in value.items():
                child = (*path, _printable(key))
                if not is_text(key):
                    return ".".join(child)
                pending.append((item, child))
        elif isinstance(value, list):
            pending.extend((item, (*path, str(index))) for index, item in enumerate(value))
    return None


def load_json(raw: bytes) -> Any:
    """``raw`` parsed as JSON, every string in it Unicode text; raises InvalidJson or InvalidText."""
    try:
        data = json.loads(raw)
    except RecursionError:
        raise InvalidJson("the body is nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidJson(f"the body is not valid JSON: {exc}") from None
    # A surrogate gets in only through a \u escape or a non-ASCII byte: most bodies skip the walk.
    if not raw.isascii() or b"\\u" in raw:
        field = _first_non_text(data)
        if field is not None:
            raise InvalidText(field)
    return data


def json_body(request: HttpRequest, *, allow_empty: bool = False) -> dict[str, Any]:
    """The request body as a JSON object, or a 400 that says what is wrong with it."""
    if not request.body.strip():
        if allow_empty:
            return {}
        raise ApiError(400, "invalid_json", "the body must be a JSON object")
    try:
        data = load_json(request.body)
    except InvalidJson as exc:
        raise ApiError(400, "invalid_json", str(exc)) from None
    except InvalidText as exc:
        raise ApiError(400, "invalid_text", str(exc), field=exc.field) from None
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_json", "the body must be a JSON object")
    return data


# --- Errors Django answers itself -------------------------------------------------------------------


def _too_large() -> ApiError:
    return ApiError(413, "too_large", f"the body is larger than {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes")


def _too_many_fields() -> ApiError:
    limit = settings.DATA_UPLOAD_MAX_NUMBER_FIELDS
    return ApiError(400, "too_many_fields", f"the request has more than {limit} parameters")


def _json_error_for(request: HttpRequest) -> bool | None:
    """None outside the APIs (Django's own pages apply), else whether the answer is in OFREP's shape."""
    path = request.path_info
    if path.startswith(OFREP_PREFIX):
        return True
    if path.startswith(API_PREFIX):
        return False
    return None


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    """handler400: Django's SuspiciousOperation family (bad Host, body over the limit, too many fields)."""
    ofrep = _json_error_for(request)
    if ofrep is None:
        return defaults.bad_request(request, exception)
    if isinstance(exception, RequestDataTooBig):
        error = _too_large()
    elif isinstance(exception, TooManyFieldsSent):
        error = _too_many_fields()
    elif isinstance(exception, DisallowedHost):
        error = ApiError(400, "bad_host", "the Host header names a host this server does not serve")
    else:
        error = ApiError(400, "bad_request", "the request is malformed")
    return error.response(ofrep=ofrep)


def page_not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    """handler404: an unknown path under the APIs is a JSON 404."""
    ofrep = _json_error_for(request)
    if ofrep is None:
        return defaults.page_not_found(request, exception)
    return ApiError(404, "not_found", "no such endpoint").response(ofrep=ofrep)


def server_error(request: HttpRequest) -> HttpResponse:
    """handler500: the error has been logged (and sent to Sentry); the client gets JSON, no traceback."""
    ofrep = _json_error_for(request)
    if ofrep is None:
        return defaults.server_error(request)
    return ApiError(500, "server_error", "the server failed; the error has been logged").response(ofrep=ofrep)
