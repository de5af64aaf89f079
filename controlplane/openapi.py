"""The operations API (/api/deployment/) on django-ninja: token auth, body parsing, errors, the document.

Each app contributes a ``ninja.Router`` from its ``api.py``; the composition root hands them to
``operations_api``. What a client sees stays as ``controlplane.api`` made it: the same token rules
(Bearer or X-API-Key, 400 for a token in the URL, 401 with WWW-Authenticate, 403 naming the scope),
the same error shape ``{"error": code, "detail": ..., "field": ...}`` with the same codes, and JSON
for every failure ninja would answer in its own words (405, a body it cannot parse, validation).
What ninja adds is the OpenAPI document, served at ``openapi.json`` to a token or a staff session,
and the Swagger UI page (``docs``) for logged-in operators, from local static files.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable
from typing import Any, cast

from django.contrib.auth.decorators import login_not_required
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.urls import URLPattern, URLResolver
from django.views.decorators.csrf import csrf_exempt
from ninja import NinjaAPI, Router, Schema
from ninja.errors import HttpError, ValidationError
from ninja.parser import Parser
from ninja.security import APIKeyHeader, HttpBearer
from pydantic_core import PydanticCustomError

from controlplane.api import ApiError, error_for, is_text, json_body
from controlplane.api import authenticate as check_token
from controlplane.models import ApiToken

PREFIX = "/api/deployment/"
TITLE = "Control plane operations API"


# --- Auth ---------------------------------------------------------------------------------------


class _TokenCheck:
    """Both schemes run the one check in ``controlplane.api.authenticate``: whichever header the token
    came in, the first scheme answers (the token, or an ApiError with the status and code of today).

    ninja's own __call__ would parse its header and pass on (to the next scheme, then its own 401) when
    the header is missing or malformed; the shared check reads the request itself instead: the query
    string's refusal, both headers, and the error that says what is wrong."""

    def __init__(self, scope: str) -> None:
        self.scope = scope
        super().__init__()

    def __call__(self, request: HttpRequest) -> ApiToken:
        return self.authenticate(request, None)

    def authenticate(self, request: HttpRequest, token: str | None) -> ApiToken:
        return check_token(request, self.scope)


class BearerToken(_TokenCheck, HttpBearer):
    """``Authorization: Bearer <token>``."""


class ApiKey(_TokenCheck, APIKeyHeader):
    """``X-API-Key: <token>``, for clients that cannot set Authorization."""

    param_name = "X-API-Key"


def token_auth(scope: str) -> list[Any]:
    """The ``auth`` of an operation that needs ``scope``: a Bearer token or an X-API-Key."""
    return [BearerToken(scope), ApiKey(scope)]


def token_of(request: HttpRequest) -> ApiToken:
    """The token that authenticated this request (ninja keeps it as ``request.auth``)."""
    token = getattr(request, "auth", None)
    if not isinstance(token, ApiToken):
        raise TypeError("the request was not authenticated by a token")
    return token


# --- Bodies and errors ----------------------------------------------------------------------------


class JsonObjectParser(Parser):
    """Bodies as ``controlplane.api.json_body`` reads them: JSON, an object, every string Unicode text.

    A blank body is no body (None): an operation whose body is optional takes it as absent."""

    def parse_body(self, request: HttpRequest) -> Any:
        if not request.body.strip():
            return None
        return json_body(request)


class Error(Schema):
    """Every error: a code (``invalid``, ``not_found``, ``locked``, ...), a sentence, and for bad
    input the path to the field at fault. Some errors add members (``scope``, ``active``)."""

    error: str
    detail: str
    field: str | None = None


_LOCATIONS = {"body", "query", "path", "header", "cookie", "form", "file"}


def _field_path(loc: Iterable[Any], body_params: set[str]) -> str:
    parts = list(loc)
    if parts and parts[0] in _LOCATIONS:
        where = parts.pop(0)
        if where == "body" and parts and parts[0] in body_params:
            parts.pop(0)
    return ".".join(str(part) for part in parts)


def _validation_error(exc: ValidationError) -> ApiError:
    """The first problem pydantic found, in the API's shape: 422 ``invalid`` naming the field."""
    first: dict[str, Any] = exc.errors[0] if exc.errors else {"loc": (), "msg": "invalid input", "type": "value_error"}
    context = first.get("ctx") or {}
    loc = list(first.get("loc", ()))
    if context.get("field"):  # a model-level rule that names the field it refused (unknown fields)
        loc.append(context["field"])
    field = _field_path(loc, {"payload"})
    if first.get("type") == "missing" and not field:
        return ApiError(400, "invalid_json", "the body must be a JSON object")
    message = str(first.get("msg", "invalid"))
    if first.get("type") == "missing":
        message = "required"
    return ApiError(422, "invalid", message, field=field or None)


def _answer(request: HttpRequest, exc: Exception) -> HttpResponse:
    if isinstance(exc, ValidationError):
        return _validation_error(exc).response()
    error = error_for(request, exc)
    if error is None and isinstance(exc, HttpError):
        # ninja wraps what the parser raised ("Cannot parse request body"): answer with the cause.
        error = error_for(request, exc.__cause__) if exc.__cause__ is not None else None
        if error is None:
            error = ApiError(exc.status_code, "bad_request", str(exc) or "the request is malformed")
    if error is None:
        raise exc
    return error.response()


# --- The API ---------------------------------------------------------------------------------------


def operations_api(routers: Iterable[tuple[str, Router]]) -> NinjaAPI:
    """The NinjaAPI for /api/deployment/ with each app's router mounted at its prefix."""
    api = NinjaAPI(
        title=TITLE,
        version="1",
        description="Deployments, backups, health and flags. Every operation takes an API token "
        "(Authorization: Bearer <token>, or X-API-Key) holding the scope the operation names.",
        openapi_url=None,
        docs_url=None,
        parser=JsonObjectParser(),
        urls_namespace="operations-api",
    )
    # ninja registers its own answers for these (in its shape); each must be replaced by name.
    for exc_class in (Exception, Http404, HttpError, ValidationError):
        # ninja types a handler's argument as the class or an instance; it only ever passes the instance.
        api.add_exception_handler(exc_class, _answer)  # type: ignore[arg-type]
    for prefix, router in routers:
        api.add_router(prefix, router)
    return api


def _json_answers(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """What ninja leaves to the URL's view: a path parameter that is not Unicode text (400
    ``invalid_text``, as ``api_view`` answers), and a method it has no operation for, which ninja
    answers in plain text and the API in JSON."""

    @functools.wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        for name, value in kwargs.items():
            if isinstance(value, str) and not is_text(value):
                return ApiError(400, "invalid_text", f"{name} is not valid Unicode text", field=name).response()
        response = view(request, *args, **kwargs)
        if response.status_code == 405 and not response.get("Content-Type", "").startswith("application/json"):
            allowed = sorted(method.strip() for method in response.get("Allow", "").split(",") if method.strip())
            answer = ApiError(405, "method_not_allowed", f"use {' or '.join(allowed)}").response()
            answer["Allow"] = ", ".join(allowed)
            return answer
        return response

    return csrf_exempt(login_not_required(wrapped))


def url_patterns(api: NinjaAPI) -> list[URLPattern | URLResolver]:
    """The operations' URL patterns, without a namespace (the URL names, which request metrics
    report per view, stay ``api-deploy`` and so on), plus the document and its page."""
    patterns: list[URLPattern | URLResolver] = []
    for pattern in api.urls[0]:
        if isinstance(pattern, URLPattern) and pattern.name == "api-root":
            continue  # ninja's index of nothing: the prefix alone stays an unknown path
        if isinstance(pattern, URLPattern):
            pattern.callback = _json_answers(pattern.callback)
        patterns.append(pattern)
    return patterns


def document(api: NinjaAPI) -> dict[str, Any]:
    """The OpenAPI document, its paths under /api/deployment/ (JSON-ready: status codes as strings)."""
    schema = cast(dict[str, Any], api.get_openapi_schema(path_prefix=PREFIX.rstrip("/")))
    return json.loads(json.dumps(schema, default=str))


def _staff(request: HttpRequest) -> bool:
    user = getattr(request, "user", None)
    return bool(user is not None and user.is_authenticated and user.is_active and user.is_staff)


def openapi_view(api: NinjaAPI) -> Callable[..., HttpResponse]:
    """GET openapi.json: for a logged-in operator, or a request with a valid token of any scope."""

    def openapi_json(request: HttpRequest) -> HttpResponse:
        try:
            if request.method != "GET":
                raise ApiError(405, "method_not_allowed", "use GET")
            if not _staff(request):
                check_token(request, None)
        except Exception as exc:  # noqa: BLE001 - mapped like every API error, or raised again
            error = error_for(request, exc)
            if error is None:
                raise
            response = error.response()
            if error.status == 405:
                response["Allow"] = "GET"
            return response
        return JsonResponse(document(api))

    return csrf_exempt(login_not_required(openapi_json))


def docs_view(api: NinjaAPI) -> Callable[..., HttpResponse]:
    """The Swagger UI page for logged-in operators; its scripts and styles are ninja's local copies."""

    def docs(request: HttpRequest) -> HttpResponse:
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        if not _staff(request):
            raise PermissionDenied("These pages are for the operations staff.")
        settings = {"url": PREFIX + "openapi.json", "validatorUrl": None, "layout": "BaseLayout", "deepLinking": True}
        return render(
            request,
            "ninja/swagger.html",
            {"api": api, "swagger_settings": json.dumps(settings), "add_csrf": False},
        )

    return docs


def refuse_unknown_fields(data: Any, fields: Iterable[str], message: str = "unknown field; fields: {fields}") -> Any:
    """The body of a ``model_validator(mode="before")``: a body naming a field not in ``fields`` is refused,
    naming the first such field (a typo is an error, never ignored)."""
    if isinstance(data, dict):
        known = list(fields)
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise PydanticCustomError("unknown_field", message, {"field": unknown[0], "fields": ", ".join(known)})
    return data
