"""The operations API's OpenAPI document is true: schemathesis runs every operation against the app.

The document is loaded as a client loads it (GET /api/deployment/openapi.json through the WSGI app);
each operation then gets generated requests with a fixed seed and a bounded number of examples, sent
with a token holding every scope. No answer is a 5xx, and every answer has a documented status, a
documented content type and a body that matches the documented schema.

Deployments the run starts stay rows: the test's transaction never commits, so their after-commit
dispatch never reaches a broker and no worker runs a step.
"""

from __future__ import annotations

import re
import time

import pytest
import schemathesis
from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from django.test import Client
from hypothesis import HealthCheck, given, seed, settings
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from controlplane.audit import Actor
from controlplane.models import SERVER_SCOPES
from deployments.defaults import ensure_defaults
from deployments.models import Deployment
from flags.models import Flag
from flags.services import flag_create
from monitoring.health import MEDIA_TYPE

pytestmark = pytest.mark.django_db

DOCUMENT = "/api/deployment/openapi.json"
DOCS = "/api/deployment/docs"
EXAMPLES = 40  # per operation: the whole run stays well under two minutes on two cores


@schemathesis.check
def no_server_error(ctx, response, case):
    """No 5xx, but for the one the document promises: a health report whose checks fail (503, in
    application/health+json; no worker or scheduler runs in this test, so some checks do fail)."""
    if response.status_code == 503 and response.headers.get("content-type", [""])[0] == MEDIA_TYPE:
        return True
    return not_a_server_error(ctx, response, case)


CHECKS = [no_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture
def wsgi_app():
    """Django's WSGI handler, keeping the test's database connection across requests (as Django's
    test client does: each request would otherwise close it, and the test's transaction with it)."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield WSGIHandler()
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


@pytest.fixture
def every_scope(make_token) -> dict[str, str]:
    return {"Authorization": f"Bearer {make_token(*SERVER_SCOPES)}"}


def test_every_operation_answers_as_the_document_says(wsgi_app, every_scope):
    ensure_defaults()  # environments, pipelines and recovery plans, as a fresh install has them
    flag_create(data={"name": "chat", "enabled": True}, actor=Actor.system("tests"))
    schema = schemathesis.openapi.from_wsgi(DOCUMENT, wsgi_app, headers=every_scope)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 14, [op.label for op in operations]

    started = time.monotonic()
    calls: dict[str, int] = {}
    # Requests that fit the document, then requests that break it (wrong types, unknown fields,
    # malformed path parameters): both must be answered as the document says.
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
        for operation in operations:

            @seed(20261202)
            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            @given(case=operation.as_strategy(generation_mode=mode))
            def run(case):
                case.call_and_validate(headers=every_scope, checks=CHECKS)
                calls[case.operation.label] = calls.get(case.operation.label, 0) + 1

            run()
    assert time.monotonic() - started < 120
    assert set(calls) == {operation.label for operation in operations} and min(calls.values()) >= 5, calls


def test_the_document_needs_a_token_or_a_login(operator_client, make_token):
    client = Client()
    anonymous = client.get(DOCUMENT)
    assert anonymous.status_code == 401 and anonymous.json()["error"] == "unauthorized"
    assert anonymous["WWW-Authenticate"].startswith("Bearer")
    with_token = client.get(DOCUMENT, HTTP_AUTHORIZATION=f"Bearer {make_token('flags:read')}")
    assert with_token.status_code == 200
    document = with_token.json()
    assert document["openapi"].startswith("3.") and "/api/deployment/deploy" in document["paths"]
    schemes = document["components"]["securitySchemes"]
    assert schemes["BearerToken"] == {"type": "http", "scheme": "bearer"}
    assert schemes["ApiKey"] == {"type": "apiKey", "in": "header", "name": "X-API-Key"}
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            assert operation["security"] == [{"BearerToken": []}, {"ApiKey": []}], (method, path)
            assert {"401", "403"} <= set(operation["responses"]), (method, path)
    assert operator_client.get(DOCUMENT).json() == document


def test_the_docs_page_is_for_logged_in_operators_and_loads_nothing_from_elsewhere(operator_client):
    client = Client()
    anonymous = client.get(DOCS)
    assert anonymous.status_code == 302 and anonymous["Location"].startswith("/accounts/login/")
    page = operator_client.get(DOCS)
    assert page.status_code == 200
    html = page.content.decode()
    assert 'id="swagger-ui"' in html and "swagger-ui-bundle" in html and DOCUMENT in html
    assert not re.search(r"(https?:)?//[\w.-]+\.\w", html), "the page loads only the control plane's own files"
    for url in re.findall(r'(?:src|href)="([^"]+)"', html):
        assert url.startswith("/static/"), url
        assert client.get(url).status_code == 200, url


def test_the_docs_page_refuses_a_logged_in_user_who_is_not_staff(client, outsider):
    client.force_login(outsider)
    assert client.get(DOCS).status_code == 403


def test_refused_bodies_keep_the_api_error_shape(api_client):
    ensure_defaults()
    flag_create(data={"name": "chat", "enabled": True}, actor=Actor.system("tests"))
    api = api_client(*SERVER_SCOPES)

    def post(url: str, body: str):
        response = api.post(url, body, content_type="application/json")
        return response.status_code, response.json()

    deploy = "/api/deployment/deploy"
    assert post(deploy, '{"environment": "demo", "type": "x"}') == (
        422,
        {
            "error": "invalid",
            "detail": "deploy or rollback (recovery plans: /api/deployment/recovery/rollback/{type})",
            "field": "type",
        },
    )
    assert post(deploy, '{"environment": "demo", "version": "v1", "zone": 1, "colour": 2}') == (
        422,
        {"error": "invalid", "detail": "unknown field; fields: environment, version, type", "field": "colour"},
    )
    assert post(deploy, "") == (400, {"error": "invalid_json", "detail": "the body must be a JSON object"})
    assert post(deploy, "[1]") == (400, {"error": "invalid_json", "detail": "the body must be a JSON object"})
    toggle = "/api/deployment/features/chat/toggle"
    status, body = post(toggle, '{"targeting_keys": ["u1", 7]}')
    assert (status, body["error"], body["field"]) == (422, "invalid", "targeting_keys.1")
    status, body = post(toggle, '{"rollout_percent": null}')
    assert (status, body["field"]) == (422, "rollout_percent")
    assert not Deployment.objects.exists() and Flag.objects.get(name="chat").targeting_keys == []
