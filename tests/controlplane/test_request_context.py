"""Request ids in responses, logs and audit events; JSON log lines; security headers."""

from __future__ import annotations

import json
import logging
import re
import subprocess

import pytest

from tests.conftest import manage, subprocess_env

pytestmark = pytest.mark.django_db
HEX32 = re.compile(r"[0-9a-f]{32}")


def test_a_request_id_is_made_and_returned(client):
    response = client.get("/accounts/login/")
    assert HEX32.fullmatch(response["X-Request-ID"])
    assert client.get("/accounts/login/")["X-Request-ID"] != response["X-Request-ID"]


def test_a_valid_incoming_request_id_is_kept(client):
    incoming = "lb-7f3a.2026_11-29"
    assert client.get("/accounts/login/", HTTP_X_REQUEST_ID=incoming)["X-Request-ID"] == incoming


@pytest.mark.parametrize(
    "incoming",
    ["a" * 129, "abc\r\nSet-Cookie: session=stolen", "has space", "semi;colon", "ünïcode", ""],
)
def test_an_invalid_request_id_is_replaced(client, incoming):
    response = client.get("/accounts/login/", HTTP_X_REQUEST_ID=incoming)
    assert HEX32.fullmatch(response["X-Request-ID"])
    assert "Set-Cookie: session" not in str(response.headers)


def test_the_request_log_line_has_the_fields(operator_client, caplog):
    with caplog.at_level(logging.INFO, logger="controlplane.request"):
        response = operator_client.get("/flags/", HTTP_X_REQUEST_ID="req-log-1")
    record = next(r for r in caplog.records if r.name == "controlplane.request")
    assert (record.method, record.path, record.status, record.user) == ("GET", "/flags/", 200, "operator")
    assert record.request_id == "req-log-1" == response["X-Request-ID"]
    assert 0 < record.duration_ms < 10_000


@pytest.mark.parametrize(
    ("path", "scope"),
    [
        ("/api/deployment/status", "deploy"),  # the operations API (ninja's auth)
        ("/ofrep/v1/evaluate/flags", "flags:read"),  # OFREP (api_view)
        ("/metrics", "monitoring:read"),
    ],
)
def test_the_request_log_line_names_the_token(client, make_token, caplog, path, scope):
    token = make_token(scope, name=f"logged-{scope}")
    method = client.post if path.startswith("/ofrep/") else client.get
    with caplog.at_level(logging.INFO, logger="controlplane.request"):
        response = method(path, HTTP_AUTHORIZATION=f"Bearer {token}", content_type="application/json")
    assert response.status_code == 200
    record = next(r for r in caplog.records if r.name == "controlplane.request")
    assert record.user == f"token:logged-{scope}"


def test_the_audit_event_carries_the_request_id(operator_client):
    from controlplane.models import AuditEvent

    operator_client.post(
        "/admin/controlplane/apitoken/add/", {"name": "ci", "scopes": ["deploy"]}, HTTP_X_REQUEST_ID="req-audit-7"
    )
    assert AuditEvent.objects.get(action="api_token.create").request_id == "req-audit-7"


def test_production_logs_are_json_lines_with_the_context(tmp_path):
    code = (
        "import logging; from controlplane.context import request_id_var;"
        "request_id_var.set('req-json-1');"
        "logging.getLogger('controlplane.test').warning('hello %s', 'world', extra={'path': '/x'});"
        "logging.getLogger('controlplane.test').info('dsn is https://user:s3cretpass@db.example.test/1')"
    )
    result = subprocess.run(
        manage("shell", "--verbosity", "0", "-c", code),
        env=subprocess_env(CONTROLPLANE_VAR_DIR=str(tmp_path), LOG_FORMAT="json"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    hello = next(line for line in lines if line["message"] == "hello world")
    assert hello["level"] == "WARNING" and hello["logger"] == "controlplane.test"
    assert hello["request_id"] == "req-json-1" and hello["path"] == "/x" and hello["time"]
    assert "s3cretpass" not in result.stdout


def test_development_logs_are_readable_lines(tmp_path):
    code = "import logging; logging.getLogger('controlplane.test').warning('plain %s', 'text')"
    result = subprocess.run(
        manage("shell", "--verbosity", "0", "-c", code),
        env=subprocess_env(CONTROLPLANE_VAR_DIR=str(tmp_path), LOG_FORMAT=None, DJANGO_ENV="development"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert re.search(r"WARNING controlplane.test \[\] plain text", result.stdout), result.stdout


def test_pages_carry_the_security_headers(operator_client):
    response = operator_client.get("/")
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"
    csp = response["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "style-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp
    html = response.content.decode()
    assert "<script>" not in html and "<style" not in html and " style=" not in html


def test_cookies_are_http_only(client, operator):
    response = client.post("/accounts/login/", {"username": "operator", "password": "correct horse battery staple"})
    assert response.cookies["sessionid"]["httponly"]
    assert client.get("/accounts/login/").cookies["csrftoken"]["httponly"]


def test_production_sets_https_hsts_and_secure_cookies(tmp_path):
    code = (
        "from django.conf import settings as s;"
        "print(s.SECURE_SSL_REDIRECT, s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, s.SECURE_HSTS_SECONDS,"
        " s.SECURE_HSTS_INCLUDE_SUBDOMAINS)"
    )
    result = subprocess.run(
        manage("shell", "--verbosity", "0", "-c", code),
        env=subprocess_env(
            CONTROLPLANE_VAR_DIR=str(tmp_path),
            DJANGO_ENV="production",
            SECRET_KEY="k3J9!xQ2@vL7#pR4$wT8%zY1^bN6&mC5*hG0(dF3)sA9_eU2+iO7-yK4",
            ALLOWED_HOSTS="ops.example.test",
            DEBUG=None,
        ),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.stdout.split() == ["True", "True", "True", "31536000", "True"], result.stderr


def test_json_log_times_match_isoformat_to_the_millisecond():
    import random
    from datetime import UTC, datetime

    from controlplane.logging import _timestamp

    for created in [1_700_000_000.0, 1_700_000_000.5, 1_764_430_000.123] + [
        random.uniform(1e9, 2e9) for _ in range(500)
    ]:
        expected = datetime.fromtimestamp(created, UTC)
        got = datetime.fromisoformat(_timestamp(created))
        assert abs((got - expected).total_seconds()) < 0.0011, (created, got, expected)


def test_the_request_record_is_the_record_logger_info_would_make():
    """The middleware builds its record directly (cheaper per request): same attributes and output."""
    import json

    from controlplane.context import _request_record, request_logger
    from controlplane.logging import JsonFormatter, TextFormatter

    values = {"user": "admin", "method": "GET", "path": "/x", "status": 200, "duration_ms": 1.5}
    ours = _request_record(("GET", "/x", 200), **values)
    made = request_logger.makeRecord(
        request_logger.name, logging.INFO, "(unknown file)", 0, "%s %s %s", ("GET", "/x", 200), None, extra=values
    )
    assert ours.__dict__.keys() == made.__dict__.keys()
    for record in (ours, made):
        record.request_id = "r1"
    json_lines = [json.loads(JsonFormatter().format(r)) for r in (ours, made)]
    for line in json_lines:
        del line["time"]
    assert json_lines[0] == json_lines[1]
    assert json_lines[0]["message"] == "GET /x 200" and json_lines[0]["status"] == 200
    text = [TextFormatter().format(r).split(" ", 2)[2] for r in (ours, made)]  # after the time
    assert text[0] == text[1]
    assert abs(ours.created - made.created) < 5 and 0 <= ours.msecs < 1000
