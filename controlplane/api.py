"""The JSON API's shared parts: token authentication with scopes, typed errors, JSON bodies.

Every API view is wrapped by ``api_view``; it is the one place where a token is read and checked.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any

from django.contrib.auth.decorators import login_not_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from controlplane.services import api_token_authenticate

# Names a token might be passed under in a URL: refused, since URLs end up in logs and histories.
_QUERY_TOKEN_NAMES = {"token", "access_token", "api_key", "apikey", "key", "auth", "bearer"}


class ApiError(Exception):
    """A failure with an HTTP status and a JSON body: ``{"error": code, "detail": ..., "field": ...}``."""

    def __init__(self, status: int, code: str, detail: str, *, field: str | None = None, **extra: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.field = field
        self.extra = extra

    def response(self) -> JsonResponse:
        body: dict[str, Any] = {"error": self.code, "detail": self.detail}
        if self.field:
            body["field"] = self.field
        body.update(self.extra)
        response = JsonResponse(body, status=self.status)
        if self.status == 401:
            response["WWW-Authenticate"] = 'Bearer realm="controlplane"'
        return response


def _raw_token(request: HttpRequest, *, allow_api_key: bool) -> str | None:
    # META, not request.headers: building the header mapping costs more than the rest of the check.
    authorization = request.META.get("HTTP_AUTHORIZATION", "")
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise ApiError(401, "unauthorized", "Authorization must be 'Bearer <token>'")
        return value.strip()
    if allow_api_key:
        api_key = request.META.get("HTTP_X_API_KEY", "").strip()
        if api_key:
            return api_key
    return None


def authenticate(request: HttpRequest, scope: str, *, allow_api_key: bool = True) -> None:
    """Set ``request.api_token`` or raise 400 (token in the URL), 401 (none, unknown) or 403 (scope)."""
    if _QUERY_TOKEN_NAMES & {name.lower() for name in request.GET}:
        raise ApiError(400, "token_in_query_string", "send the token in the Authorization header, never in the URL")
    raw = _raw_token(request, allow_api_key=allow_api_key)
    if raw is None:
        raise ApiError(401, "unauthorized", "an API token is required: Authorization: Bearer <token>")
    token = api_token_authenticate(raw)
    if token is None:
        raise ApiError(401, "unauthorized", "the token is unknown, expired or revoked")
    if not token.has_scope(scope):
        raise ApiError(403, "forbidden", f"the token lacks the scope {scope}", scope=scope)
    request.api_token = token


def api_view(
    *, scope: str, methods: tuple[str, ...] = ("GET",), allow_api_key: bool = True
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
                authenticate(request, scope, allow_api_key=allow_api_key)
                return view(request, *args, **kwargs)
            except ApiError as error:
                response = error.response()
                if error.status == 405:
                    response["Allow"] = ", ".join(methods)
                return response

        return csrf_exempt(login_not_required(wrapped))

    return decorate


def json_body(request: HttpRequest, *, allow_empty: bool = False) -> dict[str, Any]:
    """The request body as a JSON object, or a 400 that says what is wrong with it."""
    if not request.body.strip():
        if allow_empty:
            return {}
        raise ApiError(400, "invalid_json", "the body must be a JSON object")
    try:
        data = json.loads(request.body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "invalid_json", f"the body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_json", "the body must be a JSON object")
    return data
