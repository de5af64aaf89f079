"""The OpenFeature Python SDK with its OFREP provider, pointed at a live control plane."""

from __future__ import annotations

import pytest
from openfeature import api
from openfeature.contrib.provider.ofrep import OFREPProvider
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode

from controlplane.audit import Actor
from flags.evaluation import bucket
from flags.services import flag_create, flag_state_set

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def sdk_client(live_server, make_token):
    actor = Actor.system("tests")
    flag_create(data={"name": "everyone", "enabled": True, "rollout_percent": 100}, actor=actor)
    flag_create(data={"name": "half", "enabled": True, "rollout_percent": 50, "targeting_keys": ["vip"]}, actor=actor)
    flag_create(data={"name": "off", "enabled": False}, actor=actor)
    token = make_token("flags:read", name="sdk")
    api.set_provider(OFREPProvider(live_server.url, headers_factory=lambda: {"Authorization": f"Bearer {token}"}))
    yield api.get_client()
    api.clear_providers()


def test_values_reasons_and_variants(sdk_client):
    details = sdk_client.get_boolean_details("everyone", False)
    assert (details.value, details.reason, details.variant, details.error_code) == (True, "STATIC", "on", None)

    user = EvaluationContext(targeting_key="user-17")
    details = sdk_client.get_boolean_details("half", False, user)
    expected = bucket("half", "user-17") <= 50
    assert (details.value, details.reason) == (expected, "SPLIT")

    vip = sdk_client.get_boolean_details("half", False, EvaluationContext(targeting_key="vip"))
    assert (vip.value, vip.reason, vip.variant) == (True, "TARGETING_MATCH", "on")
    off = sdk_client.get_boolean_details("off", True, user)
    assert (off.value, off.reason, off.variant) == (False, "DISABLED", "off")


def test_errors_reach_the_sdk(sdk_client):
    missing = sdk_client.get_boolean_details("nope", True)
    assert missing.value is True and missing.error_code == ErrorCode.FLAG_NOT_FOUND
    no_key = sdk_client.get_boolean_details("half", False)
    assert no_key.value is False and no_key.error_code == ErrorCode.TARGETING_KEY_MISSING


def test_a_bad_token_gives_the_default(live_server, db):
    api.set_provider(OFREPProvider(live_server.url, headers_factory=lambda: {"Authorization": "Bearer cpt_wrong"}))
    try:
        details = api.get_client().get_boolean_details("everyone", False)
        assert details.value is False and details.error_code is not None
    finally:
        api.clear_providers()


def _typed(name: str, kind: str, default: object, value: object) -> None:
    actor = Actor.system("tests")
    flag_create(data={"name": name, "type": kind, "default_value": default}, actor=actor)
    state = {
        "enabled": True,
        "strategies": [{"kind": "default", "variants": [{"name": "chosen", "value": value, "weight": 1000}]}],
        "variants": [],
    }
    flag_state_set(name=name, environment="production", state=state, actor=actor)


@pytest.fixture
def typed_client(live_server, make_token):
    _typed("coach_model", "string", "coach-basic", "coach-gpt")
    _typed("max_matches", "number", 5, 12)
    _typed("ratio", "number", 0.5, 0.25)
    _typed("coach_config", "object", {}, {"tone": "warm", "limit": 3})
    token = make_token("flags:read", name="typed-sdk")
    api.set_provider(OFREPProvider(live_server.url, headers_factory=lambda: {"Authorization": f"Bearer {token}"}))
    yield api.get_client()
    api.clear_providers()


def test_each_type_reaches_the_sdk_typed_and_a_wrong_type_is_a_mismatch(typed_client):
    user = EvaluationContext(targeting_key="user-3")
    text = typed_client.get_string_details("coach_model", "fallback", user)
    assert (text.value, text.variant, text.error_code) == ("coach-gpt", "chosen", None)
    whole = typed_client.get_integer_details("max_matches", 0, user)
    assert (whole.value, whole.variant, whole.error_code) == (12, "chosen", None)
    real = typed_client.get_float_details("ratio", 1.0, user)
    assert (real.value, real.error_code) == (0.25, None)
    obj = typed_client.get_object_details("coach_config", {}, user)
    assert (obj.value, obj.variant, obj.error_code) == ({"tone": "warm", "limit": 3}, "chosen", None)
    # A type the SDK did not ask for: its default, with TYPE_MISMATCH.
    wrong = typed_client.get_boolean_details("coach_model", False, user)
    assert wrong.value is False and wrong.error_code == ErrorCode.TYPE_MISMATCH
    wrong = typed_client.get_string_details("max_matches", "x", user)
    assert wrong.value == "x" and wrong.error_code == ErrorCode.TYPE_MISMATCH
