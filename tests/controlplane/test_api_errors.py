"""Under /api/ and /ofrep/ every error is JSON in the API's shape, and hostile input is never a 500."""

from __future__ import annotations

import json
import re

import pytest
from django.contrib.auth.decorators import login_not_required
from django.http import HttpRequest, HttpResponse
from django.test import Client
from django.urls import URLResolver, get_resolver, path

from controlplane.models import SERVER_SCOPES, Scope
from controlplane.urls import handler400, handler404, handler500  # noqa: F401 (this module is a URL conf too)
from controlplane.urls import urlpatterns as controlplane_urlpatterns

pytestmark = pytest.mark.django_db

PREFIXES = ("api/", "ofrep/")
LIMIT = 4096  # DATA_UPLOAD_MAX_MEMORY_SIZE in these tests: small, so the over-limit body is cheap to send


@login_not_required
def boom(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("a bug")


# The test_server_error_is_json test serves these: the control plane's URLs plus an API view that fails.
urlpatterns = [path("api/test/boom", boom), *controlplane_urlpatterns]


def _routes(patterns, prefix: str = ""):
    for entry in patterns:
        if isinstance(entry, URLResolver):
            yield from _routes(entry.url_patterns, prefix + str(entry.pattern))
        else:
            yield prefix + str(entry.pattern)


def api_paths() -> list[str]:
    """Every route under the API prefixes, its parameters filled with values that name nothing."""
    routes = [route for route in _routes(get_resolver().url_patterns) if route.startswith(PREFIXES)]
    routes.remove("api/deployment/docs")  # the API's documentation: an HTML page for logged-in operators
    fill = {"int": "987654321"}
    return ["/" + re.sub(r"<(?:(\w+):)?\w+>", lambda m: fill.get(m[1], "no-such-thing"), r) for r in routes]


def assert_json_error(response, url: str, what: str, status: int | None = None) -> dict:
    context = f"{what} {url}: {response.status_code} {response.get('Content-Type')} {response.content[:200]!r}"
    if response.get("Content-Type") == "application/health+json":  # a health report: 503 says "failing"
        assert response.status_code in (200, 503) and json.loads(response.content)["checks"], context
        return {}
    assert response.status_code < 500, context
    if status is not None:
        assert response.status_code == status, context
    assert response["Content-Type"].startswith("application/json"), context
    body = json.loads(response.content)
    if response.status_code >= 400:
        if url.startswith("/ofrep/"):
            assert isinstance(body.get("errorCode"), str) and body.get("errorDetails"), context
        else:
            assert isinstance(body.get("error"), str) and body.get("detail"), context
    return body


@pytest.fixture
def all_scopes(make_token):
    return Client(HTTP_AUTHORIZATION=f"Bearer {make_token(*SERVER_SCOPES)}")


def test_the_enumeration_finds_every_api(settings):
    found = api_paths()
    assert "/ofrep/v1/evaluate/flags" in found and "/api/deployment/deployments/987654321/cancel" in found
    assert len(found) >= 15


@pytest.mark.parametrize("url", api_paths())
def test_every_api_answers_hostile_requests_with_json(all_scopes, make_token, settings, url):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = LIMIT
    # The frontend API takes only its own scope's token (it ships in a browser, alone).
    frontend = url.startswith("/api/frontend")
    client = Client(HTTP_AUTHORIZATION=make_token(Scope.FLAGS_FRONTEND)) if frontend else all_scopes
    deep = "[" * 10_000 + "]" * 10_000
    deep_object = '{"a":' * 10_000 + "1" + "}" * 10_000
    oversized = json.dumps({"context": {"targetingKey": "k" * (2 * LIMIT)}})
    surrogate = '{"context": {"targetingKey": "\\ud800"}, "environment": "\\udfff"}'
    for method in ("get", "post"):
        send = getattr(client, method)
        assert_json_error(send(url), url, f"{method} unknown id")
        if method == "post":
            for name, body in (("deep array", deep), ("deep object", deep_object), ("surrogate", surrogate)):
                assert_json_error(send(url, body, content_type="application/json"), url, name)
            response = send(url, oversized, content_type="application/json")
            assert_json_error(response, url, "over-limit body")
            assert response.status_code in (404, 405, 413), "a view that reads the body refuses it whole"
        assert_json_error(send(url, HTTP_HOST="evil.example"), url, f"{method} bad Host", status=400)
        many = "&".join(f"p{i}=1" for i in range(settings.DATA_UPLOAD_MAX_NUMBER_FIELDS + 1))
        response = send(f"{url}?{many}")
        assert_json_error(response, url, f"{method} too many fields")
        assert response.status_code in (400, 405), "the parameters are refused, or the method before them"


def test_unknown_id_is_a_json_404(all_scopes):
    url = "/api/deployment/deployments/987654321"
    assert assert_json_error(all_scopes.get(url), url, "unknown id", status=404)["error"] == "not_found"
    cancel = url + "/cancel"
    assert assert_json_error(all_scopes.post(cancel), cancel, "unknown id", status=404)["error"] == "not_found"


def test_over_limit_body_is_413(all_scopes, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = LIMIT
    body = json.dumps({"environment": "demo", "version": "v" * LIMIT})
    url = "/api/deployment/deploy"
    response = all_scopes.post(url, body, content_type="application/json")
    assert assert_json_error(response, url, "over-limit", status=413)["error"] == "too_large"
    ofrep = "/ofrep/v1/evaluate/flags"
    response = all_scopes.post(ofrep, json.dumps({"context": {"targetingKey": "k" * LIMIT}}), "application/json")
    assert assert_json_error(response, ofrep, "over-limit", status=413)["errorCode"] == "GENERAL"


def test_deep_nesting_is_a_parse_error(all_scopes):
    deep = '{"context":' * 10_000 + "{}" + "}" * 10_000
    for url in ("/ofrep/v1/evaluate/flags", "/ofrep/v1/evaluate/flags/chat"):
        body = assert_json_error(all_scopes.post(url, deep, "application/json"), url, "deep", status=400)
        assert body["errorCode"] == "PARSE_ERROR"
    url = "/api/deployment/deploy"
    body = assert_json_error(all_scopes.post(url, deep, "application/json"), url, "deep", status=400)
    assert body["error"] == "invalid_json"


@pytest.mark.parametrize(
    "url",
    ["/api/nope", "/api/deployment/nope/deeper", "/api/", "/ofrep/v1/nope", "/ofrep/v1/evaluate/flags/a/b", "/ofrep/"],
)
def test_unknown_paths_under_the_apis_are_json_404(client, url):
    for send in (client.get, client.post):
        body = assert_json_error(send(url), url, "unknown path", status=404)
        assert body == (
            {"errorCode": "GENERAL", "errorDetails": "no such endpoint"}
            if url.startswith("/ofrep/")
            else {"error": "not_found", "detail": "no such endpoint"}
        )


def test_pages_keep_django_error_pages(client):
    response = client.get("/flags/a/b/c/d")
    assert response.status_code == 404 and response["Content-Type"].startswith("text/html")
    response = client.get("/accounts/login/", HTTP_HOST="evil.example")
    assert response.status_code == 400 and response["Content-Type"].startswith("text/html")


def test_server_error_is_json_without_a_traceback(client, settings):
    settings.ROOT_URLCONF = __name__
    client.raise_request_exception = False
    response = client.get("/api/test/boom")
    assert response.status_code == 500 and response["Content-Type"] == "application/json"
    assert response.json() == {"error": "server_error", "detail": "the server failed; the error has been logged"}
    assert b"a bug" not in response.content
