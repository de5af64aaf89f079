"""OFREP: bodies and status codes as the protocol's openapi.yaml says, evaluation without queries."""

from __future__ import annotations

import json

import pytest

from controlplane.audit import Actor
from flags.evaluation import bucket
from flags.services import flag_create

pytestmark = pytest.mark.django_db
ONE = "/ofrep/v1/evaluate/flags/{}"
BULK = "/ofrep/v1/evaluate/flags"


@pytest.fixture
def flags(db):
    actor = Actor.system("tests")
    flag_create(data={"name": "everyone", "enabled": True, "rollout_percent": 100}, actor=actor)
    flag_create(data={"name": "half", "enabled": True, "rollout_percent": 50, "targeting_keys": ["vip"]}, actor=actor)
    flag_create(data={"name": "off", "enabled": False, "rollout_percent": 100}, actor=actor)


@pytest.fixture
def reader(api_client):
    return api_client("flags:read")


def post(client, url, body=None, raw=None, **headers):
    data = raw if raw is not None else json.dumps(body if body is not None else {})
    return client.post(url, data=data, content_type="application/json", **headers)


def test_single_evaluation_success(reader, flags):
    response = post(reader, ONE.format("half"), {"context": {"targetingKey": "user-1"}})
    assert response.status_code == 200
    expected = bucket("half", "user-1") <= 50
    assert response.json() == {
        "key": "half", "value": expected, "reason": "SPLIT", "variant": "on" if expected else "off", "metadata": {},
    }  # fmt: skip


@pytest.mark.parametrize(
    ("flag", "context", "value", "reason", "variant"),
    [
        ("everyone", {}, True, "STATIC", "on"),
        ("off", {"targetingKey": "x"}, False, "DISABLED", "off"),
        ("half", {"targetingKey": "vip"}, True, "TARGETING_MATCH", "on"),
    ],
)
def test_reasons_and_variants(reader, flags, flag, context, value, reason, variant):
    body = post(reader, ONE.format(flag), {"context": context}).json()
    assert (body["value"], body["reason"], body["variant"]) == (value, reason, variant)


def test_unknown_flag_is_404(reader, flags):
    response = post(reader, ONE.format("nope"), {"context": {"targetingKey": "u"}})
    assert response.status_code == 404
    assert response.json()["errorCode"] == "FLAG_NOT_FOUND" and response.json()["errorDetails"]


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("{not json", "PARSE_ERROR"),
        ("[1, 2]", "PARSE_ERROR"),
        ('{"context": "user-1"}', "INVALID_CONTEXT"),
        ('{"context": {"targetingKey": 42}}', "INVALID_CONTEXT"),
        (json.dumps({"context": {"targetingKey": "x" * 257}}), "INVALID_CONTEXT"),
    ],
)
def test_bad_requests_are_400_with_details(reader, flags, raw, code):
    single = post(reader, ONE.format("half"), raw=raw)
    assert single.status_code == 400
    assert single.json()["errorCode"] == code and single.json()["errorDetails"] and single.json()["key"] == "half"
    bulk = post(reader, BULK, raw=raw)
    assert bulk.status_code == 400
    assert bulk.json()["errorCode"] == code and bulk.json()["errorDetails"]


def test_missing_targeting_key(reader, flags):
    response = post(reader, ONE.format("half"), {"context": {}})
    assert response.status_code == 400
    assert response.json()["errorCode"] == "TARGETING_KEY_MISSING" and response.json()["errorDetails"]


def test_auth_401_403_and_api_key(client, make_token, flags):
    assert post(client, BULK, {}).status_code == 401
    writer = make_token("deploy", name="wrong-scope")
    assert post(client, BULK, {}, HTTP_AUTHORIZATION=f"Bearer {writer}").status_code == 403
    reader = make_token("flags:read", name="frontend")
    assert post(client, BULK, {}, HTTP_X_API_KEY=reader).status_code == 200
    assert client.get(BULK, HTTP_X_API_KEY=reader).status_code == 405


def test_bulk_evaluates_every_flag_with_per_flag_errors(reader, flags):
    response = post(reader, BULK, {"context": {}})
    assert response.status_code == 200
    by_key = {item["key"]: item for item in response.json()["flags"]}
    assert by_key["everyone"]["value"] is True and by_key["everyone"]["variant"] == "on"
    assert by_key["off"]["reason"] == "DISABLED"
    assert by_key["half"]["errorCode"] == "TARGETING_KEY_MISSING"


def test_bulk_etag_and_304(reader, flags, django_capture_on_commit_callbacks):
    first = post(reader, BULK, {"context": {"targetingKey": "u1"}})
    etag = first["ETag"]
    assert etag.startswith('"')
    again = post(reader, BULK, {"context": {"targetingKey": "u1"}}, HTTP_IF_NONE_MATCH=etag)
    assert again.status_code == 304 and again["ETag"] == etag and again.content == b""
    other_user = post(reader, BULK, {"context": {"targetingKey": "u2"}}, HTTP_IF_NONE_MATCH=etag)
    assert other_user.status_code == 200
    with django_capture_on_commit_callbacks(execute=True):
        flag_create(data={"name": "new"}, actor=Actor.system())
    changed = post(reader, BULK, {"context": {"targetingKey": "u1"}}, HTTP_IF_NONE_MATCH=etag)
    assert changed.status_code == 200 and changed["ETag"] != etag


def test_304_has_no_content_type(reader, flags):
    etag = post(reader, BULK, {"context": {"targetingKey": "u1"}})["ETag"]
    not_modified = post(reader, BULK, {"context": {"targetingKey": "u1"}}, HTTP_IF_NONE_MATCH=etag)
    assert not_modified.status_code == 304 and not_modified.content == b""
    assert "Content-Type" not in not_modified, "a 304 has no body, so no type for one"


def test_warm_evaluation_makes_no_query(reader, flags, django_assert_num_queries):
    post(reader, BULK, {"context": {"targetingKey": "u1"}})  # warms the snapshot and the tokens
    with django_assert_num_queries(0):
        assert post(reader, BULK, {"context": {"targetingKey": "u2"}}).status_code == 200
        assert post(reader, ONE.format("half"), {"context": {"targetingKey": "u3"}}).status_code == 200


def test_evaluation_keeps_serving_when_redis_stops(reader, flags, caplog, private_redis_cache):
    server, _ = private_redis_cache
    assert post(reader, ONE.format("everyone"), {"context": {"targetingKey": "u1"}}).status_code == 200
    server.kill()
    server.wait()
    response = post(reader, ONE.format("everyone"), {"context": {"targetingKey": "u1"}})
    assert response.status_code == 200 and response.json()["value"] is True
    bulk = post(reader, BULK, {"context": {"targetingKey": "u1"}})
    assert bulk.status_code == 200 and len(bulk.json()["flags"]) == 3
    assert any("shared cache unreachable" in r.getMessage() for r in caplog.records)
