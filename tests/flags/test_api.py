"""The flags part of the operations API: list, toggle, per-user values."""

from __future__ import annotations

import json

import pytest

from controlplane.audit import Actor
from controlplane.models import AuditEvent
from flags.evaluation import bucket
from flags.models import Flag
from flags.services import flag_create

pytestmark = pytest.mark.django_db


@pytest.fixture
def flags(db):
    actor = Actor.system("tests")
    flag_create(data={"name": "chat", "enabled": True, "rollout_percent": 30, "owner": "chat"}, actor=actor)
    flag_create(data={"name": "digest", "enabled": False}, actor=actor)


def toggle(client, name, body=None, raw=None):
    data = raw if raw is not None else ("" if body is None else json.dumps(body))
    return client.post(f"/api/deployment/features/{name}/toggle", data=data, content_type="application/json")


def test_list_gives_settings_and_who_it_is_on_for(api_client, flags):
    response = api_client("flags:read").get("/api/deployment/features")
    assert response.status_code == 200
    chat = next(f for f in response.json()["flags"] if f["name"] == "chat")
    assert chat["rollout_percent"] == 30 and chat["owner"] == "chat"
    assert chat["on_for"] == "on for 30 % of users"


def test_empty_toggle_flips_enabled_and_answers_the_new_state(api_client, flags):
    client = api_client("flags:write")
    response = toggle(client, "digest")
    assert response.status_code == 200 and response.json()["enabled"] is True
    assert Flag.objects.get(name="digest").enabled is True
    event = AuditEvent.objects.get(action="flag.toggle")
    assert event.actor_type == "token" and event.before["enabled"] is False and event.after["enabled"] is True
    assert toggle(client, "digest").json()["enabled"] is False


def test_toggle_with_a_body_sets_those_fields(api_client, flags):
    response = toggle(api_client("flags:write"), "chat", {"rollout_percent": 75, "targeting_keys": ["u1", "u2"]})
    assert response.status_code == 200
    assert response.json()["rollout_percent"] == 75 and response.json()["targeting_keys"] == ["u1", "u2"]
    assert response.json()["enabled"] is True  # not flipped when the body sets fields


@pytest.mark.parametrize(
    ("body", "raw", "status", "field"),
    [
        ({"rollout_percent": 101}, None, 422, "rollout_percent"),
        ({"rollout_percent": "50"}, None, 422, "rollout_percent"),
        ({"enabled": 1}, None, 422, "enabled"),
        ({"targeting_keys": ["x" * 257]}, None, 422, "targeting_keys.0"),
        ({"name": "renamed"}, None, 422, "name"),
        ({"owner": "x"}, None, 422, "owner"),
        (None, "[true]", 400, None),
        (None, "{oops", 400, None),
    ],
)
def test_bad_toggle_bodies_change_nothing(api_client, flags, body, raw, status, field):
    response = toggle(api_client("flags:write"), "chat", body, raw)
    assert response.status_code == status
    assert response.json().get("field") == field
    chat = Flag.objects.get(name="chat")
    assert (chat.enabled, chat.rollout_percent, chat.targeting_keys) == (True, 30, [])
    assert not AuditEvent.objects.filter(action="flag.toggle").exists()


def test_toggle_unknown_flag_is_404(api_client, flags):
    assert toggle(api_client("flags:write"), "nope").status_code == 404


def test_toggle_needs_the_write_scope(api_client, flags):
    assert toggle(api_client("flags:read"), "chat").status_code == 403


def test_every_flag_for_one_user(api_client, flags):
    response = api_client("flags:read").get("/api/deployment/features/user-42")
    assert response.status_code == 200
    body = response.json()
    assert body["user_id"] == "user-42"
    on = bucket("chat", "user-42") <= 30
    assert body["flags"]["chat"] == {"value": on, "variant": "on" if on else "off", "reason": "SPLIT"}
    assert body["flags"]["digest"]["reason"] == "DISABLED"
    assert api_client("flags:read").get("/api/deployment/features/" + "x" * 257).status_code == 400
