"""Text that is not Unicode (a lone surrogate, which JSON's \\ud800 escape produces) is a 400 on every
API that takes text, and never reaches the hash: mmh3 crashes the whole process on such a string."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
from django.test import RequestFactory
from django.urls import resolve

from controlplane.audit import Actor
from flags.evaluation import bucket
from flags.models import Flag
from flags.services import flag_create
from tests.conftest import BASE_DIR, free_port, manage, subprocess_env, test_database_url

ONE = "/ofrep/v1/evaluate/flags/half"
BULK = "/ofrep/v1/evaluate/flags"
LONE = '{"context": {"targetingKey": "\\ud800"}}'  # the JSON escape: json.loads gives a lone surrogate
HOSTILE_BODIES = {
    "escaped high": LONE.encode(),
    "escaped low": b'{"context": {"targetingKey": "u\\uDFFF"}}',
    "utf-8 encoded surrogate": b'{"context": {"targetingKey": "\xed\xa0\x80"}}',
    "in a key": b'{"context": {"targetingKey": "u1", "\\ud800": 1}}',
    "deep in a list": b'{"context": {"targetingKey": "u1", "tags": [["ok", "\\udc00"]]}}',
}


@pytest.fixture
def half(db):
    flag_create(data={"name": "half", "enabled": True, "rollout_percent": 50}, actor=Actor.system("tests"))


def post(client, url, raw: bytes):
    return client.post(url, data=raw, content_type="application/json")


@pytest.mark.parametrize("name", HOSTILE_BODIES)
def test_ofrep_refuses_it_as_invalid_context(api_client, half, name):
    client = api_client("flags:read")
    for url in (ONE, BULK):
        response = post(client, url, HOSTILE_BODIES[name])
        assert response.status_code == 400, (url, response.content)
        assert response.json()["errorCode"] == "INVALID_CONTEXT" and response.json()["errorDetails"]
        assert "ETag" not in response


def test_a_surrogate_pair_is_text_and_evaluates(api_client, half):
    emoji = "\U0001f600"
    response = post(api_client("flags:read"), ONE, json.dumps({"context": {"targetingKey": emoji}}).encode())
    assert response.status_code == 200 and response.json()["value"] == (bucket("half", emoji) <= 50)
    assert bucket("half", emoji) == bucket("half", emoji.encode().decode())


def test_the_flags_api_refuses_it_naming_the_field(api_client, half):
    client = api_client("flags:write")
    response = post(client, "/api/deployment/features/half/toggle", b'{"targeting_keys": ["ok", "\\ud800"]}')
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_text" and response.json()["field"] == "targeting_keys.1"
    assert Flag.objects.get(name="half").targeting_keys == []
    response = post(client, "/api/deployment/features/half/toggle", b'{"\\udbff": true}')
    assert response.status_code == 400 and response.json()["field"] == "\\udbff"  # named, never echoed raw


def test_the_deployment_api_refuses_it_naming_the_field(api_client):
    response = post(api_client("deploy"), "/api/deployment/deploy", b'{"environment": "demo", "version": "v\\ud800"}')
    assert response.status_code == 400
    detail = "version is not valid Unicode text"
    assert response.json() == {"error": "invalid_text", "detail": detail, "field": "version"}


def test_path_parameters_are_checked_too(make_token, half):
    # WSGI servers hand Django percent-encoded bytes that are not UTF-8 back as %XX text, so only a view
    # called with a non-text parameter shows the check.
    request = RequestFactory().get("/", HTTP_AUTHORIZATION=f"Bearer {make_token('flags:read')}")
    view = resolve("/api/deployment/features/someone").func
    response = view(request, user_id="\ud800")
    assert response.status_code == 400 and json.loads(response.content)["field"] == "user_id"


def test_bucket_refuses_it_instead_of_crashing():
    # In a child process: before the fix, this crashed the interpreter (SIGSEGV).
    code = (
        "from flags.evaluation import bucket\n"
        "try:\n    bucket('half', '\\ud800')\nexcept UnicodeEncodeError:\n    print('refused')"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=BASE_DIR, capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout.strip()) == (0, "refused"), result.stderr


# --- Through a real server process ----------------------------------------------------------------


@pytest.fixture
def runserver(tmp_path):
    """A `manage.py runserver --noreload` (one process) on the test database; yields (process, base URL)."""
    port = free_port()
    log = tmp_path / "runserver.log"
    server = subprocess.Popen(
        manage("runserver", "--noreload", f"127.0.0.1:{port}"),
        cwd=BASE_DIR,
        env=subprocess_env(DATABASE_URL=test_database_url()),
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(base + "/health/live", timeout=2).read()
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                pytest.fail(f"runserver did not start:\n{log.read_text()}")
            time.sleep(0.2)
    yield server, base
    server.terminate()
    server.wait(timeout=30)


def send(base: str, path: str, body: bytes, token: str) -> tuple[int, dict]:
    request = urllib.request.Request(
        base + path,
        data=body,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.mark.django_db(transaction=True)
def test_a_lone_surrogate_does_not_kill_the_server(runserver, make_token):
    server, base = runserver
    flag_create(data={"name": "half", "enabled": True, "rollout_percent": 50}, actor=Actor.system("tests"))
    token = make_token("flags:read", "flags:write")
    for name, body in HOSTILE_BODIES.items():
        for path in (ONE, BULK):
            status, answer = send(base, path, body, token)
            assert (status, answer["errorCode"]) == (400, "INVALID_CONTEXT"), (name, path, answer)
        status, answer = send(base, "/api/deployment/features/half/toggle", body, token)
        assert (status, answer["error"]) == (400, "invalid_text"), (name, answer)
    # Percent-encoded surrogate bytes in the path arrive as text ("%ED%A0%80"), and are evaluated as such.
    request = urllib.request.Request(base + "/api/deployment/features/%ED%A0%80", headers={"X-Api-Key": token})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert json.loads(response.read())["user_id"] == "%ED%A0%80"

    assert server.poll() is None, "the server process died"
    status, answer = send(base, ONE, b'{"context": {"targetingKey": "u1"}}', token)
    assert status == 200 and answer["value"] == (bucket("half", "u1") <= 50)
    assert server.poll() is None
