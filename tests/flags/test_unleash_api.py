"""Unleash's client API (/api/client/...) and frontend API (/api/frontend) through the test client: the
document's shape, the token rules (a bare token on these paths only, scopes, the token's environment),
ETags, registration and metrics stored (and a refused body storing nothing), CORS."""

from __future__ import annotations

import io
import json
from datetime import timedelta
from typing import Any

import pytest
from django.core.management import call_command
from django.utils import timezone

from controlplane.audit import Actor
from controlplane.errors import InvalidInput
from controlplane.services import api_token_create
from flags.models import FlagUsage, SdkInstance
from flags.services import flag_create

pytestmark = pytest.mark.django_db
FEATURES = "/api/client/features"


def _import(tmp_path: Any, document: dict[str, Any]) -> None:
    path = tmp_path / "flags.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    call_command("import_flags", str(path), stdout=io.StringIO())


def _c(field: str, operator: str, values: list[str], **extra: Any) -> dict[str, Any]:
    return {"field": field, "operator": operator, "values": values, **extra}


DOCUMENT = {
    "segments": [{"name": "paying", "constraints": [_c("plan", "IN", ["pro", "team"])]}],
    "flags": [
        {
            "name": "checkout",
            "environments": {
                "production": {
                    "enabled": True,
                    "strategies": [
                        {
                            "kind": "flexibleRollout",
                            "rollout": 40,
                            "segments": ["paying"],
                            "constraints": [
                                _c("country", "IN", ["SE", " no ", ""], case_insensitive=True),
                                _c("appVersion", "SEMVER_GTE", ["2.0.0"]),
                            ],
                            "variants": [
                                {"name": "a", "weight": 1, "value": "x", "payload_type": "string"},
                                {"name": "b", "weight": 1, "overrides": [{"field": "userId", "values": ["u1"]}]},
                            ],
                        }
                    ],
                    "variants": [],
                },
                "staging": {"enabled": True, "strategies": [{"kind": "default"}], "variants": []},
            },
        },
        {"name": "beta", "enabled": True, "rollout_percent": 100, "targeting_keys": []},
        {"name": "dark", "enabled": False, "rollout_percent": 100, "targeting_keys": []},
    ],
}


@pytest.fixture
def flags(tmp_path):
    _import(tmp_path, DOCUMENT)


def test_the_features_document_is_unleashs_version_2(flags, make_token, client):
    token = make_token("flags:read")
    response = client.get(FEATURES, HTTP_AUTHORIZATION=token)  # bare, as the SDKs send it
    assert response.status_code == 200
    body = response.json()
    assert body["version"] == 2 and body["query"]["environment"] == "production"
    assert body["segments"] == [
        {
            "id": 1,
            "name": "paying",
            "constraints": [
                {
                    "contextName": "plan",
                    "operator": "IN",
                    "values": ["pro", "team"],
                    "caseInsensitive": False,
                    "inverted": False,
                }
            ],
        }
    ]
    features = {f["name"]: f for f in body["features"]}
    assert set(features) == {"checkout", "beta", "dark"}
    assert features["dark"]["enabled"] is False
    strategy = features["checkout"]["strategies"][0]
    assert strategy["name"] == "flexibleRollout" and strategy["segments"] == [1]
    assert strategy["parameters"] == {"rollout": "40", "stickiness": "default", "groupId": "checkout"}
    country, version = strategy["constraints"]
    # Case-insensitive IN (ours) in Unleash's words: a regex over the cleaned values, whatever the case.
    assert country == {
        "contextName": "country",
        "operator": "REGEX",
        "value": "^(?:SE|no)$",
        "values": [],
        "caseInsensitive": True,
        "inverted": False,
    }
    assert version["operator"] == "SEMVER_GTE" and version["value"] == "2.0.0"
    a, b = strategy["variants"]
    assert a["payload"] == {"type": "string", "value": "x"} and "payload" not in b
    assert b["overrides"] == [{"contextName": "userId", "values": ["u1"]}]


def test_the_token_names_the_environment(flags, client):
    _, raw = api_token_create(name="stage", scopes=["flags:read"], environment="staging", actor=Actor.system("t"))
    body = client.get(FEATURES, HTTP_AUTHORIZATION=f"Bearer {raw}").json()
    features = {f["name"]: f for f in body["features"]}
    assert body["query"]["environment"] == "staging"
    assert features["checkout"]["strategies"] == [
        {"name": "default", "parameters": {}, "constraints": [], "segments": [], "variants": [], "disabled": False}
    ]
    assert features["beta"]["enabled"] is False  # no state in staging: off


def test_etag_answers_304_until_a_flag_changes(flags, make_token, client, django_capture_on_commit_callbacks):
    token = make_token("flags:read")
    first = client.get(FEATURES, HTTP_AUTHORIZATION=token)
    etag = first["ETag"]
    again = client.get(FEATURES, HTTP_AUTHORIZATION=token, HTTP_IF_NONE_MATCH=etag)
    assert again.status_code == 304 and again.content == b"" and again["ETag"] == etag
    with django_capture_on_commit_callbacks(execute=True):  # the version bump, as after a real commit
        flag_create(data={"name": "new_one", "enabled": True, "rollout_percent": 100}, actor=Actor.system("t"))
    changed = client.get(FEATURES, HTTP_AUTHORIZATION=token, HTTP_IF_NONE_MATCH=etag)
    assert changed.status_code == 200 and changed["ETag"] != etag
    assert "new_one" in {f["name"] for f in changed.json()["features"]}


@pytest.mark.parametrize(
    ("authorization", "status"),
    [("", 401), ("cpt_unknown", 401), ("Basic abc", 401)],
    ids=["none", "unknown", "other-scheme"],
)
def test_the_client_api_refuses_without_a_good_token(flags, client, authorization, status):
    response = client.get(FEATURES, HTTP_AUTHORIZATION=authorization)
    assert response.status_code == status and response.json()["error"] == "unauthorized"


@pytest.mark.parametrize("scope", ["flags:write", "flags:frontend", "monitoring:read"], ids=["write", "front", "mon"])
def test_the_client_api_needs_flags_read(flags, make_token, client, scope):
    response = client.get(FEATURES, HTTP_AUTHORIZATION=make_token(scope))
    assert response.status_code == 403 and response.json()["scope"] == "flags:read"


def test_a_bare_token_is_taken_on_unleash_paths_only(flags, make_token, client):
    token = make_token("flags:read")
    ofrep = client.post(
        "/ofrep/v1/evaluate/flags", data="{}", content_type="application/json", HTTP_AUTHORIZATION=token
    )
    assert ofrep.status_code == 401
    assert client.get("/api/deployment/features", HTTP_AUTHORIZATION=token).status_code == 401
    assert client.get("/api/deployment/features", HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 200


# --- register and metrics ---------------------------------------------------------------------------


def _post(client: Any, path: str, token: str, body: Any) -> Any:
    data = body if isinstance(body, str) else json.dumps(body)
    return client.post(path, data=data, content_type="application/json", HTTP_AUTHORIZATION=token)


REGISTER = {
    "appName": "backend",
    "instanceId": "pod-1",
    "sdkVersion": "unleash-python-sdk:6.9.1",
    "strategies": ["default", "flexibleRollout"],
    "started": "2026-12-01T10:00:00.123456789Z",
    "interval": 60000,
}


# Two hours ago, a quarter past: within what a metrics body may date (flags.usage.MAX_BUCKET_AGE).
RECENT = (timezone.now() - timedelta(hours=2)).replace(minute=15, second=0, microsecond=0)


def _metrics(toggles: dict[str, Any], start: str = RECENT.isoformat()) -> dict[str, Any]:
    return {"appName": "backend", "instanceId": "pod-1", "bucket": {"start": start, "stop": start, "toggles": toggles}}


def test_register_records_the_instance(flags, make_token, client):
    response = _post(client, "/api/client/register", make_token("flags:read"), REGISTER)
    assert response.status_code == 202
    instance = SdkInstance.objects.get()
    assert (instance.app_name, instance.instance_id, instance.environment.name) == ("backend", "pod-1", "production")
    assert instance.sdk_version == "unleash-python-sdk:6.9.1" and instance.interval_ms == 60000
    assert _post(client, "/api/client/register", make_token("flags:read"), REGISTER).status_code == 202
    assert SdkInstance.objects.count() == 1


def test_metrics_add_up_per_flag_and_hour(flags, make_token, client):
    token = make_token("flags:read")
    body = _metrics({"beta": {"yes": 3, "no": 1, "variants": {"disabled": 4}}, "nobody_knows": {"yes": 9, "no": 0}})
    assert _post(client, "/api/client/metrics", token, body).json() == {"counted": 1}
    _post(client, "/api/client/metrics", token, _metrics({"beta": {"yes": 2, "no": 0, "variants": {"a": 1}}}))
    row = FlagUsage.objects.get()  # the unknown flag made no row
    assert (row.flag, row.yes, row.no, row.variants) == ("beta", 5, 1, {"disabled": 4, "a": 1})
    assert row.hour == RECENT.replace(minute=0)
    assert SdkInstance.objects.get().last_seen is not None


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/api/client/register", "{not json", None),
        ("/api/client/register", "[]", None),
        ("/api/client/register", {**REGISTER, "appName": ""}, "appName"),
        ("/api/client/register", {**REGISTER, "strategies": "default"}, "strategies"),
        ("/api/client/register", {**REGISTER, "started": "yesterday"}, "started"),
        ("/api/client/metrics", "{not json", None),
        ("/api/client/metrics", {"appName": "x"}, "bucket"),
        ("/api/client/metrics", _metrics({"beta": {"yes": 1}}, start="soon"), "bucket.start"),
        ("/api/client/metrics", _metrics({"beta": {"yes": 1}, "dark": {"yes": -1}}), "bucket.toggles.dark.yes"),
        ("/api/client/metrics", _metrics({"beta": {"variants": {"a": "1"}}}), "bucket.toggles.beta.variants.a"),
    ],
    ids=["reg-syntax", "reg-list", "reg-app", "reg-strategies", "reg-started", "met-syntax", "met-bucket", "met-start",
         "met-negative", "met-variant"],
)  # fmt: skip
def test_a_refused_body_is_a_400_naming_the_field_and_stores_nothing(flags, make_token, client, path, body, field):
    response = _post(client, path, make_token("flags:read"), body)
    assert response.status_code == 400
    error = response.json()
    assert error["detail"] and error.get("field") == field
    assert not SdkInstance.objects.exists() and not FlagUsage.objects.exists()


# --- frontend API -----------------------------------------------------------------------------------


def test_the_frontend_api_answers_the_enabled_flags_for_a_context(flags, make_token, client):
    token = make_token("flags:frontend")
    context = {"userId": "u1", "properties": {"plan": "pro", "country": "se", "appVersion": "2.1.0"}}
    post = client.post("/api/frontend", data=json.dumps({"context": context}), content_type="application/json",
                       HTTP_AUTHORIZATION=token)  # fmt: skip
    assert post.status_code == 200
    toggles = {t["name"]: t for t in post.json()["toggles"]}
    assert set(toggles) <= {"checkout", "beta"} and "dark" not in toggles
    assert toggles["beta"] == {
        "name": "beta",
        "enabled": True,
        "variant": {"name": "disabled", "enabled": False, "feature_enabled": True},
        "impressionData": False,
    }
    get = client.get(
        "/api/frontend",
        {"userId": "u1", "properties[plan]": "pro", "properties[country]": "se", "properties[appVersion]": "2.1.0"},
        HTTP_AUTHORIZATION=token,
    )
    assert get.json() == post.json()
    if "checkout" in toggles:  # u1 overrides to variant b
        assert toggles["checkout"]["variant"] == {"name": "b", "enabled": True, "feature_enabled": True}
    free = client.get("/api/frontend", {"userId": "u1", "properties[plan]": "free"}, HTTP_AUTHORIZATION=token)
    assert [t["name"] for t in free.json()["toggles"]] == ["beta"]
    again = client.get("/api/frontend", {"userId": "u1", "properties[plan]": "free"}, HTTP_AUTHORIZATION=token,
                       HTTP_IF_NONE_MATCH=free["ETag"])  # fmt: skip
    assert again.status_code == 304


def test_a_variant_payload_reaches_the_browser(tmp_path, make_token, client):
    _import(tmp_path, {"flags": [{"name": "banner", "type": "string", "environments": {"production": {
        "enabled": True, "strategies": [{"kind": "default"}],
        "variants": [{"name": "hello", "weight": 1, "value": "Hi!", "payload_type": "string"}]}}}]})  # fmt: skip
    body = client.get("/api/frontend", HTTP_AUTHORIZATION=make_token("flags:frontend")).json()
    assert body["toggles"][0]["variant"] == {
        "name": "hello",
        "enabled": True,
        "feature_enabled": True,
        "payload": {"type": "string", "value": "Hi!"},
    }


@pytest.mark.parametrize(
    ("body", "field"),
    [("[1]", None), ({"context": []}, "context"), ({"context": {"properties": [1]}}, "context.properties"),
     ({"context": {"userId": {"a": 1}}}, "context.userId"),
     ({"context": {"currentTime": "noon"}}, "context.currentTime")],
    ids=["list", "context-list", "properties-list", "nested-user", "bad-time"],
)  # fmt: skip
def test_the_frontend_api_refuses_a_bad_context(flags, make_token, client, body, field):
    response = _post(client, "/api/frontend", make_token("flags:frontend"), body)
    assert response.status_code == 400 and response.json().get("field") == field


def test_a_frontend_token_can_do_nothing_else(flags, make_token, client):
    token = make_token("flags:frontend")
    assert client.get(FEATURES, HTTP_AUTHORIZATION=token).status_code == 403
    ofrep = client.post("/ofrep/v1/evaluate/flags", data="{}", content_type="application/json",
                        HTTP_AUTHORIZATION=f"Bearer {token}")  # fmt: skip
    assert ofrep.status_code == 403
    assert client.get("/api/deployment/features", HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 403
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 403
    # And a flags:read token cannot answer the browser.
    assert client.get("/api/frontend", HTTP_AUTHORIZATION=make_token("flags:read")).status_code == 403


def test_a_frontend_token_carries_no_other_scope_and_reads_one_environment(db):
    with pytest.raises(InvalidInput) as refused:
        api_token_create(name="x", scopes=["flags:frontend", "flags:read"], actor=Actor.system("t"))
    assert refused.value.field == "scopes"
    token, _ = api_token_create(name="web", scopes=["flags:frontend"], environment="staging", actor=Actor.system("t"))
    assert token.environment is not None and token.environment.name == "staging"


def test_cors_for_the_products_origins(flags, make_token, client, settings):
    settings.FLAGS_FRONTEND_ORIGINS = ["https://app.example.com"]
    preflight = client.options(
        "/api/frontend",
        HTTP_ORIGIN="https://app.example.com",
        HTTP_ACCESS_CONTROL_REQUEST_METHOD="GET",
        HTTP_ACCESS_CONTROL_REQUEST_HEADERS="authorization, unleash-appname",
    )
    assert preflight.status_code == 204
    assert preflight["Access-Control-Allow-Origin"] == "https://app.example.com"
    assert preflight["Access-Control-Allow-Headers"] == "authorization, unleash-appname"
    assert "GET" in preflight["Access-Control-Allow-Methods"]
    token = make_token("flags:frontend")
    answer = client.get("/api/frontend", HTTP_ORIGIN="https://app.example.com", HTTP_AUTHORIZATION=token)
    assert answer["Access-Control-Allow-Origin"] == "https://app.example.com" and "Origin" in answer["Vary"]
    refused = client.get("/api/frontend", HTTP_ORIGIN="https://app.example.com")  # no token: still readable
    assert refused.status_code == 401 and refused["Access-Control-Allow-Origin"] == "https://app.example.com"
    other = client.options(
        "/api/frontend", HTTP_ORIGIN="https://evil.example", HTTP_ACCESS_CONTROL_REQUEST_METHOD="GET"
    )
    assert "Access-Control-Allow-Origin" not in other and "Access-Control-Allow-Methods" not in other
    assert "Access-Control-Allow-Origin" not in client.get("/api/frontend", HTTP_ORIGIN="https://evil.example",
                                                           HTTP_AUTHORIZATION=token)  # fmt: skip


def test_frontend_sdks_metrics_are_counted_too(flags, make_token, client):
    token = make_token("flags:frontend")
    body = _metrics({"beta": {"yes": 1, "no": 0, "variants": {}}})
    assert _post(client, "/api/frontend/client/metrics", token, body).status_code == 202
    assert _post(client, "/api/frontend/client/register", token, REGISTER).status_code == 202
    assert FlagUsage.objects.get().yes == 1 and SdkInstance.objects.count() == 1
