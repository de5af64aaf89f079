"""Flag states per environment: the migration keeps every bucket, environments are isolated, OFREP
answers in the token's environment with typed values, variants and (when asked) the explanation;
strategies, constraints, segments and variants are checked (a bad value is an error naming it) and
edited in the admin as forms, every change audited."""

from __future__ import annotations

import io
import json
import random

import pytest
from django.core.management import call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.test import Client

from controlplane.audit import Actor
from controlplane.localcopy import forget_all
from controlplane.models import ApiToken, AuditEvent, Environment
from flags import evaluation, targeting
from flags.models import Flag, FlagState, Segment, Strategy
from flags.services import (
    InvalidFlagDefinition,
    flag_create,
    flag_state_set,
    flag_update,
    flags_export,
    flags_import,
)
from flags.snapshot import current

SYSTEM = Actor.system("tests")
ONE = "/ofrep/v1/evaluate/flags/{}"
BULK = "/ofrep/v1/evaluate/flags"

# --- The migration -----------------------------------------------------------------------------------

BEFORE = ("flags", "0002_drop_unused_waffle_flag_tables")
AFTER = ("flags", "0003_flag_states")
OLD_FLAGS = [
    ("chat", True, 30, ["vip", "u-7"]),
    ("digest", True, 0, ["only-me"]),
    ("search", True, 100, []),
    ("beta", True, 1, []),
    ("half", True, 50, []),
    ("ninety", True, 99, ["x"]),
    ("dark", False, 70, ["vip"]),
]


@pytest.mark.django_db(transaction=True)
def test_the_migration_keeps_every_users_answer_and_bucket():
    executor = MigrationExecutor(connection)
    executor.migrate([BEFORE])
    old_apps = executor.loader.project_state([BEFORE]).apps
    OldFlag = old_apps.get_model("flags", "Flag")
    for name, enabled, rollout, keys in OLD_FLAGS:
        OldFlag.objects.create(name=name, enabled=enabled, rollout_percent=rollout, targeting_keys=keys)
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())
    forget_all()
    production = current().flags_in("production")
    staging = current().flags_in("staging")
    rng = random.Random(18)
    ids = [str(i) for i in range(3000)] + ["vip", "u-7", "only-me", "x", ""]
    ids += ["".join(rng.choice("abcXYZ019-_é✓") for _ in range(rng.randint(1, 24))) for _ in range(2000)]
    for name, enabled, rollout, keys in OLD_FLAGS:
        today = evaluation.CompiledFlag(name, enabled, rollout, frozenset(keys))
        migrated = production[name]
        assert not migrated.custom, name  # today's one line: edited and evaluated as before
        assert staging[name].enabled is False  # other environments start off
        for user in ids:
            assert evaluation.evaluate(migrated, user) == evaluation.evaluate(today, user), (name, user)
            if user:  # the engine, as Unleash's SDKs, reads an empty id as none (a coin toss)
                engine = targeting.evaluate(migrated.engine(), targeting.Context(user_id=user))
                assert engine.enabled is evaluation.evaluate(today, user)[0], (name, user)
    chat = Flag.objects.get(name="chat")
    assert (chat.enabled, chat.rollout_percent, chat.targeting_keys) == (True, 30, ["u-7", "vip"])


# --- Environments ------------------------------------------------------------------------------------


@pytest.fixture
def chat(db):
    return flag_create(data={"name": "chat", "enabled": True, "rollout_percent": 100}, actor=SYSTEM)


@pytest.mark.django_db
def test_a_change_in_staging_does_not_move_production(chat, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        flag_update(name="chat", changes={"rollout_percent": 10}, environment="staging", actor=SYSTEM)
        flag_update(name="chat", changes={"enabled": True}, environment="staging", actor=SYSTEM)
    snap = current()
    assert (snap.flags["chat"].enabled, snap.flags["chat"].rollout_percent) == (True, 100)
    assert (snap.flags_in("staging")["chat"].enabled, snap.flags_in("staging")["chat"].rollout_percent) == (True, 10)
    assert snap.flags_in("development")["chat"].enabled is False
    event = AuditEvent.objects.filter(action="flag.update").first()
    assert event.after["environment"] == "staging" and event.after["rollout_percent"] == 10
    chat.refresh_from_db()
    assert chat.rollout_percent == 100  # the flag's one line is production's


@pytest.fixture
def staging_reader(make_token):
    raw = make_token("flags:read", name="staging-sdk")
    ApiToken.objects.filter(name="staging-sdk").update(environment=Environment.objects.get(name="staging"))
    forget_all()
    return Client(HTTP_AUTHORIZATION=f"Bearer {raw}")


def _post(client, url, body, **headers):
    return client.post(url, data=json.dumps(body), content_type="application/json", **headers)


@pytest.mark.django_db
def test_ofrep_answers_in_the_tokens_environment(chat, api_client, staging_reader, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        flag_update(name="chat", changes={"enabled": True, "rollout_percent": 0}, environment="staging", actor=SYSTEM)
    production = api_client("flags:read")  # a token bound to no environment reads production
    assert _post(production, ONE.format("chat"), {}).json()["value"] is True
    body = _post(staging_reader, ONE.format("chat"), {}).json()
    assert (body["value"], body["reason"]) == (False, "STATIC")
    bulk = _post(staging_reader, BULK, {}).json()
    assert bulk["flags"] == [{"key": "chat", "value": False, "reason": "STATIC", "variant": "off", "metadata": {}}]
    assert _post(api_client("flags:read"), BULK, {}).json()["flags"][0]["value"] is True


# --- Strategies, constraints, variants through OFREP --------------------------------------------------

COACH_STATE = {
    "enabled": True,
    "strategies": [
        {
            "kind": "flexibleRollout",
            "rollout": 100,
            "constraints": [
                {"field": "plan", "operator": "IN", "values": ["premium"]},
                {"field": "country", "operator": "IN", "values": ["de", "fr"], "case_insensitive": True},
                {"field": "appVersion", "operator": "SEMVER_GTE", "values": ["2.3.0"]},
            ],
            "variants": [
                {"name": "gpt", "value": "coach-gpt", "weight": 500},
                {"name": "classic", "value": "coach-classic", "weight": 500},
            ],
        }
    ],
    "variants": [],
}
PREMIUM_EU = {"targetingKey": "user-1", "plan": "premium", "country": "DE", "appVersion": "2.3.1"}


@pytest.fixture
def coach(db, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        flag_create(data={"name": "coach_model", "type": "string", "default_value": "coach-basic"}, actor=SYSTEM)
        flag_state_set(name="coach_model", environment="production", state=COACH_STATE, actor=SYSTEM)


@pytest.mark.django_db
def test_typed_variants_through_ofrep(coach, api_client):
    reader = api_client("flags:read")
    body = _post(reader, ONE.format("coach_model"), {"context": PREMIUM_EU}).json()
    expected = targeting.evaluate(current().flags["coach_model"].engine(), targeting.Context.of(PREMIUM_EU))
    assert body["value"] == expected.value and body["variant"] == expected.variant_name
    assert body["value"] in ("coach-gpt", "coach-classic") and body["metadata"] == {"enabled": True}
    # A missing field does not match: the flag's default value, no variant.
    basic = _post(reader, ONE.format("coach_model"), {"context": {"targetingKey": "user-1", "plan": "premium"}})
    assert basic.json()["value"] == "coach-basic" and "variant" not in basic.json()
    old_app = {**PREMIUM_EU, "appVersion": "2.2.9"}
    assert _post(reader, ONE.format("coach_model"), {"context": old_app}).json()["value"] == "coach-basic"
    bulk = {f["key"]: f for f in _post(reader, BULK, {"context": PREMIUM_EU}).json()["flags"]}
    assert bulk["coach_model"]["value"] == body["value"]


@pytest.mark.django_db
def test_the_explanation_is_in_metadata_when_asked(coach, api_client):
    reader = api_client("flags:read")
    plain = _post(reader, ONE.format("coach_model"), {"context": {"targetingKey": "u", "plan": "free"}}).json()
    assert "explanation" not in plain["metadata"]
    asked = _post(
        reader, ONE.format("coach_model"), {"context": {"targetingKey": "u", "plan": "free"}}, HTTP_X_FLAGS_EXPLAIN="1"
    ).json()
    meta = asked["metadata"]
    assert meta["explanation"] == "off: no strategy matched"
    assert meta["strategyIndex"] == 0 and meta["constraint"].startswith("plan IN [premium]")
    on = _post(reader, ONE.format("coach_model"), {"context": PREMIUM_EU}, HTTP_X_FLAGS_EXPLAIN="true").json()
    assert on["metadata"]["explanation"].startswith("on: strategy 0") and on["metadata"]["variantSource"] == "strategy"
    bulk = _post(reader, BULK, {"context": PREMIUM_EU}, HTTP_X_FLAGS_EXPLAIN="1").json()
    assert bulk["flags"][0]["metadata"]["explanation"].startswith("on:")


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("constraint", "field", "named"),
    [
        ({"field": "appVersion", "operator": "SEMVER_GT", "values": ["2.x"]}, "value", "'2.x'"),
        ({"field": "age", "operator": "NUM_GT", "values": ["eighteen"]}, "value", "'eighteen'"),
        ({"field": "ip", "operator": "IN_CIDR", "values": ["10.0.0.0/8", "nope"]}, "values", "'nope'"),
        ({"field": "signup", "operator": "DATE_AFTER", "values": ["yesterday"]}, "value", "'yesterday'"),
        ({"field": "email", "operator": "REGEX", "values": ["(unclosed"]}, "value", "'(unclosed'"),
        ({"field": "email", "operator": "LIKE", "values": ["x"]}, "operator", "'LIKE'"),
    ],
    ids=["semver", "number", "cidr", "date", "regex", "operator"],
)
def test_a_bad_constraint_value_is_refused_naming_it(chat, constraint, field, named):
    state = {"enabled": True, "strategies": [{"kind": "default", "constraints": [constraint]}]}
    with pytest.raises(InvalidFlagDefinition) as error:
        flag_state_set(name="chat", environment="production", state=state, actor=SYSTEM)
    assert error.value.field == f"state.strategies.0.constraints.0.{field}" and named in str(error.value)
    assert not Strategy.objects.filter(kind="default").exists()


@pytest.mark.django_db
def test_a_variant_value_of_another_type_is_refused(db):
    flag_create(data={"name": "limit", "type": "number"}, actor=SYSTEM)
    state = {"enabled": True, "strategies": [], "variants": [{"name": "big", "value": "ten"}]}
    with pytest.raises(InvalidFlagDefinition, match="'ten' is not a number"):
        flag_state_set(name="limit", environment="production", state=state, actor=SYSTEM)


@pytest.mark.django_db
def test_a_segment_change_changes_every_flag_that_uses_it(chat, api_client, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        flags_import(
            document={
                "segments": [{"name": "eu", "constraints": [{"field": "country", "operator": "IN", "values": ["DE"]}]}],
                "flags": [{"name": "chat", "environments": {"production": {"enabled": True, "strategies": [
                    {"kind": "default", "segments": ["eu"]}]}}}],
            },
            actor=SYSTEM,
        )  # fmt: skip
    reader = api_client("flags:read")
    assert _post(reader, ONE.format("chat"), {"context": {"country": "DE"}}).json()["value"] is True
    assert _post(reader, ONE.format("chat"), {"context": {"country": "US"}}).json()["value"] is False
    with django_capture_on_commit_callbacks(execute=True):
        flags_import(
            document={
                "segments": [{"name": "eu", "constraints": [{"field": "country", "operator": "IN", "values": ["US"]}]}],
                "flags": [],
            },
            actor=SYSTEM,
        )
    assert _post(reader, ONE.format("chat"), {"context": {"country": "US"}}).json()["value"] is True
    assert AuditEvent.objects.filter(action="segment.import").count() == 2


# --- The OpenFeature SDK, each type --------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_typed_answers_through_the_openfeature_sdk(live_server, make_token):
    from openfeature import api
    from openfeature.contrib.provider.ofrep import OFREPProvider
    from openfeature.evaluation_context import EvaluationContext
    from openfeature.exception import ErrorCode

    def typed(name: str, kind: str, value: object) -> None:
        flag_create(data={"name": name, "type": kind}, actor=SYSTEM)
        state = {"enabled": True, "strategies": [], "variants": [{"name": "only", "value": value}]}
        flag_state_set(name=name, environment="production", state=state, actor=SYSTEM)

    typed("model", "string", "coach-gpt")
    typed("limit", "number", 12)
    typed("ratio", "number", 0.25)
    typed("layout", "object", {"columns": 3})
    flag_create(data={"name": "switch", "enabled": True, "rollout_percent": 100}, actor=SYSTEM)
    token = make_token("flags:read", name="sdk")
    api.set_provider(OFREPProvider(live_server.url, headers_factory=lambda: {"Authorization": f"Bearer {token}"}))
    try:
        client = api.get_client()
        who = EvaluationContext(targeting_key="u1")
        string = client.get_string_details("model", "none", who)
        assert (string.value, string.variant, string.error_code) == ("coach-gpt", "only", None)
        assert client.get_integer_value("limit", 0, who) == 12
        assert client.get_float_value("ratio", 0.0, who) == 0.25
        assert client.get_object_value("layout", {}, who) == {"columns": 3}
        assert client.get_boolean_value("switch", False, who) is True
        mismatch = client.get_boolean_details("model", False, who)
        assert (mismatch.value, mismatch.error_code) == (False, ErrorCode.TYPE_MISMATCH)
        assert client.get_string_details("limit", "x", who).error_code == ErrorCode.TYPE_MISMATCH
    finally:
        api.clear_providers()


# --- Import and export ---------------------------------------------------------------------------------


def _run(*args: str) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


@pytest.mark.django_db
def test_export_carries_every_environment_and_round_trips(coach, chat, tmp_path):
    flag_update(name="chat", changes={"rollout_percent": 5, "enabled": True}, environment="staging", actor=SYSTEM)
    exported = _run("export_flags")
    document = json.loads(exported)
    chat_doc = next(f for f in document["flags"] if f["name"] == "chat")
    assert chat_doc["environments"]["production"] == {"enabled": True, "rollout_percent": 100, "targeting_keys": []}
    assert chat_doc["environments"]["staging"] == {"enabled": True, "rollout_percent": 5, "targeting_keys": []}
    coach_doc = next(f for f in document["flags"] if f["name"] == "coach_model")
    assert coach_doc["type"] == "string" and coach_doc["environments"]["production"]["strategies"][0]["constraints"]
    path = tmp_path / "flags.json"
    path.write_text(exported)
    events = AuditEvent.objects.count()
    assert "0 created, 0 updated, 2 unchanged" in _run("import_flags", str(path))
    assert AuditEvent.objects.count() == events
    assert json.loads(_run("export_flags")) == document
    # Into an empty database, the file makes the same flags.
    Flag.objects.all().delete()
    _run("import_flags", str(path))
    assert flags_export() == document


@pytest.mark.django_db
def test_todays_format_means_production(chat, tmp_path):
    path = tmp_path / "flags.json"
    path.write_text(json.dumps({"flags": [{"name": "chat", "rollout_percent": 40}]}))
    _run("import_flags", str(path))
    states = {s.environment.name: s.simple() for s in FlagState.objects.filter(flag__name="chat")}
    assert states["production"] == (40, []) and states["staging"] == (100, [])


@pytest.mark.django_db
def test_unleash_features_import_into_a_named_environment(chat, tmp_path):
    document = {
        "version": 1,
        "features": [
            {
                "name": "chat",
                "enabled": True,
                "strategies": [
                    {"name": "userWithId", "parameters": {"userIds": "a,b"}},
                    {"name": "flexibleRollout", "parameters": {"rollout": "25", "groupId": "chat"}},
                ],
            },
            {"name": "new-one", "enabled": True, "strategies": [{"name": "default", "constraints": [
                {"contextName": "appName", "operator": "IN", "values": ["web"]}]}]},
        ],
    }  # fmt: skip
    path = tmp_path / "unleash.json"
    path.write_text(json.dumps(document))
    output = _run("import_flags", "--environment", "staging", str(path))
    assert "1 created, 1 updated" in output
    states = {s.environment.name: s for s in FlagState.objects.filter(flag__name="chat")}
    assert states["staging"].simple() == (25, ["a", "b"]) and states["production"].simple() == (100, [])
    staging = current().flags_in("staging")
    assert staging["new-one"].custom and staging["chat"].rollout_percent == 25


# --- The admin -----------------------------------------------------------------------------------------


def _management(prefix: str, total: int, initial: int = 0) -> dict[str, str]:
    return {
        f"{prefix}-TOTAL_FORMS": str(total),
        f"{prefix}-INITIAL_FORMS": str(initial),
        f"{prefix}-MIN_NUM_FORMS": "0",
        f"{prefix}-MAX_NUM_FORMS": "1000",
    }


@pytest.mark.django_db
def test_admin_edits_constraints_as_forms_and_names_a_bad_value(operator_client, chat):
    state = FlagState.objects.get(flag__name="chat", environment__name="production")
    strategy = state.strategies.get()
    url = f"/admin/flags/strategy/{strategy.pk}/change/"
    base = {
        "position": "0",
        "kind": "flexibleRollout",
        "title": "",
        "rollout": "100",
        "stickiness": "default",
        "group_id": "",
        "user_ids": "",
        "parameters": "",
        **_management("constraints", 1),
        **_management("variants", 0),
        "constraints-0-position": "0",
        "constraints-0-field": "appVersion",
        "constraints-0-operator": "SEMVER_GTE",
        "constraints-0-values": "2.x",
    }
    refused = operator_client.post(url, base)
    assert refused.status_code == 200
    assert "&#x27;2.x&#x27; is not a semantic version" in refused.content.decode()
    assert not strategy.constraints.exists()
    saved = operator_client.post(url, {**base, "constraints-0-values": "2.3.0"})
    assert saved.status_code == 302, saved.content.decode()[:2000]
    assert list(strategy.constraints.values_list("values", flat=True)) == [["2.3.0"]]
    event = AuditEvent.objects.get(action="flag.state.update")
    assert event.actor_label == "operator" and event.before["rollout_percent"] == 100
    assert event.after["strategies"][0]["constraints"][0]["values"] == ["2.3.0"]
    state_page = operator_client.get(f"/admin/flags/flagstate/{state.pk}/change/").content.decode()
    assert "Rollout (flexible)" in state_page


@pytest.mark.django_db
def test_segment_admin_lists_the_flags_that_use_it(operator_client, chat):
    flags_import(
        document={
            "segments": [{"name": "premium", "constraints": [{"field": "plan", "operator": "IN", "values": ["p"]}]}],
            "flags": [{"name": "chat", "environments": {"staging": {"enabled": True, "strategies": [
                {"kind": "default", "segments": ["premium"]}]}}}],
        },
        actor=SYSTEM,
    )  # fmt: skip
    segment = Segment.objects.get(name="premium")
    page = operator_client.get(f"/admin/flags/segment/{segment.pk}/change/").content.decode()
    assert "chat</a> (staging)" in page
    response = operator_client.post(
        f"/admin/flags/segment/{segment.pk}/change/",
        {
            "name": "premium",
            "description": "paying",
            **_management("constraints", 1, 1),
            "constraints-0-id": str(segment.constraints.get().pk),
            "constraints-0-segment": str(segment.pk),
            "constraints-0-position": "0",
            "constraints-0-field": "plan",
            "constraints-0-operator": "IN",
            "constraints-0-values": "p\nq",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    event = AuditEvent.objects.get(action="segment.update")
    assert event.after["constraints"][0]["values"] == ["p", "q"] and event.before["description"] == ""


@pytest.mark.django_db
def test_gauges_read_productions_line_and_mark_more_as_minus_one(coach, chat):
    from flags.state_metrics import flag_gauges

    flag_update(name="chat", changes={"rollout_percent": 30}, actor=SYSTEM)
    flag_update(name="chat", changes={"rollout_percent": 70, "enabled": False}, environment="staging", actor=SYSTEM)
    enabled, rollout = flag_gauges()
    assert {s.labels["flag"]: s.value for s in enabled.samples} == {"chat": 1, "coach_model": 1}
    assert {s.labels["flag"]: s.value for s in rollout.samples} == {"chat": 30, "coach_model": -1}


@pytest.mark.django_db
def test_a_segment_in_use_cannot_be_deleted(operator_client, chat):
    flags_import(
        document={
            "segments": [
                {"name": "beta", "constraints": [{"field": "plan", "operator": "IN", "values": ["beta"]}]},
                {"name": "unused"},
            ],
            "flags": [{"name": "chat", "environments": {"production": {"enabled": True, "strategies": [
                {"kind": "default", "segments": ["beta"]}]}}}],
        },
        actor=SYSTEM,
    )  # fmt: skip
    used, unused = Segment.objects.get(name="beta"), Segment.objects.get(name="unused")
    assert operator_client.post(f"/admin/flags/segment/{used.pk}/delete/", {"post": "yes"}).status_code == 403
    both = {"action": "delete_selected", "_selected_action": [used.pk, unused.pk], "post": "yes"}
    operator_client.post("/admin/flags/segment/", both)  # refused whole: one of them is in use
    assert Segment.objects.count() == 2
    only_unused = {"action": "delete_selected", "_selected_action": [unused.pk], "post": "yes"}
    operator_client.post("/admin/flags/segment/", only_unused)
    assert list(Segment.objects.values_list("name", flat=True)) == ["beta"]
    assert AuditEvent.objects.filter(action="segment.delete").count() == 1
