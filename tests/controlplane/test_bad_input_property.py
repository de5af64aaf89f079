"""Bad input, tried by machine: generated JSON of every shape sent to every JSON endpoint that takes a
body, and to ``import_flags``. Whatever arrives, the answer is below 500 with a JSON error body, and a
refusal (4xx, or a command error) changes nothing in the database."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.apps import apps
from django.core.management import CommandError, call_command
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controlplane.audit import Actor
from deployments.defaults import ensure_defaults
from flags.services import flag_create

pytestmark = pytest.mark.django_db

# Field names the endpoints know, so that generated objects reach the validators and not only the
# "unknown field" refusal; and strings that have broken parsers before (a lone surrogate, a template,
# a variable reference, control characters, very long text).
KNOWN_KEYS = [
    "context",
    "targetingKey",
    "environment",
    "version",
    "type",
    "enabled",
    "rollout_percent",
    "targeting_keys",
    "flags",
    "name",
    "description",
]
NASTY_TEXT = [
    "\ud800",
    "a\udfffb",
    "${WINGMANMATCH_DATABASE_URL}",
    "{version}",
    "demo",
    "v1",
    "..",
    "-rf",
    "a/b",
    "\x00",
    "line\r\nFAKE",
    "x" * 5000,
    "🙂",
    "",
]
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
    | st.sampled_from(NASTY_TEXT)
)
keys = st.sampled_from(KNOWN_KEYS) | st.text(max_size=12) | st.sampled_from(NASTY_TEXT[:3])
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(keys, children, max_size=5),
    max_leaves=25,
)
# Mostly objects (what the endpoints expect), sometimes any JSON value, sometimes not JSON at all.
bodies = st.one_of(
    st.dictionaries(keys, json_values, max_size=6).map(json.dumps),
    json_values.map(json.dumps),
    st.binary(max_size=64).map(lambda raw: raw.decode("latin-1")),
    st.integers(min_value=50, max_value=3000).map(lambda depth: "[" * depth + "]" * depth),
)
PROPERTY = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def database_state() -> dict[str, object]:
    """Row counts of every model, and the fields an operator change would move."""
    from deployments.models import Deployment
    from flags.models import Flag

    state: dict[str, object] = {
        model._meta.label: model._default_manager.count()
        for model in apps.get_models()
        # Request-metric rollups and token use times record reads, not changes.
        if model._meta.label not in {"monitoring.RequestRollup"}
    }
    # Each flag's production state (its one line) and fields: the columns they were before environments.
    state["flags"] = [
        (f.name, f.enabled, f.rollout_percent, f.targeting_keys, f.description) for f in Flag.objects.order_by("pk")
    ]
    state["deployments"] = list(Deployment.objects.order_by("pk").values_list("pk", "status"))
    return state


@pytest.fixture
def world(db):
    actor = Actor.system("tests")
    for name, percent in (("everyone", 100), ("half", 50), ("off", 0)):
        flag_create(data={"name": name, "enabled": True, "rollout_percent": percent}, actor=actor)
    ensure_defaults(actor=actor)


def assert_json_error_or_success(response, before: dict[str, object]) -> None:
    assert response.status_code < 500, response.content[:300]
    if response.status_code == 304:
        return
    assert response["Content-Type"].startswith("application/json"), response["Content-Type"]
    json.loads(response.content)  # a body that parses
    if 400 <= response.status_code < 500:
        assert database_state() == before


ENDPOINTS = [
    ("/ofrep/v1/evaluate/flags/half", "flags:read"),
    ("/ofrep/v1/evaluate/flags", "flags:read"),
    ("/api/deployment/features/half/toggle", "flags:write"),
    ("/api/deployment/deploy", "deploy"),
    ("/api/deployment/recovery/rollback/database_failure?dry_run=true", "deploy"),
    ("/api/deployment/deployments/1/cancel", "deploy"),
]


@pytest.mark.parametrize(("url", "scope"), ENDPOINTS, ids=[url for url, _ in ENDPOINTS])
def test_generated_bodies_get_a_json_answer_and_change_nothing_when_refused(world, client, make_token, url, scope):
    client.defaults["HTTP_AUTHORIZATION"] = f"Bearer {make_token(scope)}"

    @PROPERTY
    @given(body=bodies)
    def send(body: str) -> None:
        before = database_state()
        response = client.generic(
            "POST", url, data=body.encode("utf-8", "surrogatepass"), content_type="application/json"
        )
        assert_json_error_or_success(response, before)

    send()


flag_documents = st.one_of(
    json_values,
    st.fixed_dictionaries({"flags": st.lists(st.dictionaries(keys, json_values, max_size=6), max_size=4)}),
    st.fixed_dictionaries(
        {
            "flags": st.lists(
                st.fixed_dictionaries(
                    {"name": st.text(max_size=20) | st.sampled_from(NASTY_TEXT)},
                    optional={
                        "enabled": json_values,
                        "rollout_percent": json_values,
                        "targeting_keys": json_values,
                        "description": json_values,
                    },
                ),
                max_size=4,
            )
        }
    ),
)


def test_import_flags_refuses_generated_documents_whole(world, tmp_path: Path):
    @PROPERTY
    @given(document=flag_documents)
    def run(document: object) -> None:
        path = tmp_path / "flags.json"
        path.write_text(json.dumps(document), encoding="utf-8", errors="surrogatepass")
        before = database_state()
        try:
            call_command("import_flags", str(path), stdout=open("/dev/null", "w"))  # noqa: SIM115
        except CommandError as error:
            assert str(error).startswith(str(path))  # one readable line that names the file
            assert "\n" not in str(error)
            assert database_state() == before

    run()
