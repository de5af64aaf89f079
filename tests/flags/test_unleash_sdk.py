"""Parity with Unleash's own SDK: the real ``UnleashClient`` (its Rust engine, yggdrasil) pointed at a live
control plane's ``/api/client``, evaluating locally, against the control plane's own answer (OFREP).

1. A fixture of flags with every constraint operator (inverted and case-insensitive too), segments,
   rollouts of every stickiness and group, flag and strategy variants with payloads and overrides, named
   users, dependencies and typed flags; thousands of generated contexts; for each context and flag the
   SDK's ``is_enabled`` and ``get_variant`` must equal OFREP's value, ``metadata.enabled`` and variant.
   An answer OFREP gives as TARGETING_KEY_MISSING (a coin toss: no stickiness value in the context) is
   not compared, and counted. The SDK then posts its metrics, which must arrive as usage rows.
2. Unleash's client specification (the files tests/flags/test_unleash_conformance.py lists): each file's
   state imported, served by the client API to the real SDK and by the frontend API, every case checked
   on both. The counts per file are printed.
"""

from __future__ import annotations

import io
import json
import random
from typing import Any

import pytest
from django.core.management import call_command
from UnleashClient import UnleashClient
from UnleashClient.utils import InstanceAllowType

from flags.models import FlagUsage, SdkInstance
from flags.snapshot import current
from flags.targeting import Context, evaluate
from tests.flags.test_unleash_conformance import FILES, SPEC

pytestmark = pytest.mark.django_db(transaction=True)
APP, SDK_ENVIRONMENT = "parity", "default"
CONTEXTS = 3000


def _c(field: str, operator: str, values: list[str], *, ci: bool = False, inverted: bool = False) -> dict[str, Any]:
    return {"field": field, "operator": operator, "values": values, "case_insensitive": ci, "inverted": inverted}


def _s(kind: str = "flexibleRollout", **values: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"kind": kind, "rollout": 100 if kind == "flexibleRollout" else None}
    base.update(values)
    return base


def _v(name: str, weight: int, **values: Any) -> dict[str, Any]:
    return {"name": name, "weight": weight, **values}


def _flag(name: str, state: dict[str, Any], **values: Any) -> dict[str, Any]:
    return {"name": name, "environments": {"production": state}, **values}


def _on(*strategies: dict[str, Any], variants: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"enabled": True, "strategies": list(strategies), "variants": variants or []}


FIXTURE: dict[str, Any] = {
    "segments": [
        {"name": "paying", "constraints": [_c("plan", "IN", ["pro", "team"])]},
        {"name": "nordic", "constraints": [_c("country", "IN", ["se", "no", "dk", "fi"], ci=True)]},
    ],
    "flags": [
        _flag("op_in", _on(_s(constraints=[_c("country", "IN", ["se", "no", " dk ", ""])]))),
        _flag("op_not_in", _on(_s(constraints=[_c("plan", "NOT_IN", ["free"])]))),
        _flag("op_in_ci", _on(_s(constraints=[_c("country", "IN", ["SE", "no"], ci=True)]))),
        _flag("op_not_in_ci", _on(_s(constraints=[_c("plan", "NOT_IN", ["Free", "trial"], ci=True)]))),
        _flag("op_not_in_ci_inverted", _on(_s(constraints=[_c("plan", "NOT_IN", ["PRO"], ci=True, inverted=True)]))),
        _flag("op_in_inverted", _on(_s(constraints=[_c("country", "IN", ["us"], inverted=True)]))),
        _flag(
            "op_strings",
            _on(
                _s(constraints=[_c("email", "STR_STARTS_WITH", ["admin", "ops."], ci=True)]),
                _s(constraints=[_c("email", "STR_ENDS_WITH", ["@example.com"])]),
                _s(constraints=[_c("email", "STR_CONTAINS", ["+test"], inverted=True), _c("plan", "IN", ["team"])]),
            ),
        ),
        _flag("op_contains_ci", _on(_s(constraints=[_c("email", "STR_CONTAINS", ["QA"], ci=True)]))),
        _flag(
            "op_numbers",
            _on(
                _s(constraints=[_c("age", "NUM_GT", ["18"]), _c("age", "NUM_LTE", ["65"])]),
                _s(constraints=[_c("age", "NUM_EQ", ["7.5"])]),
                _s(constraints=[_c("score", "NUM_GTE", ["100"]), _c("score", "NUM_LT", ["1000"], inverted=True)]),
            ),
        ),
        _flag(
            "op_semver",
            _on(
                _s(constraints=[_c("appVersion", "SEMVER_GTE", ["2.0.0"]), _c("appVersion", "SEMVER_LT", ["3.0.0"])]),
                _s(constraints=[_c("appVersion", "SEMVER_EQ", ["3.0.0-rc.1"])]),
                _s(constraints=[_c("appVersion", "SEMVER_GT", ["4.1.0-beta.2"])]),
                _s(constraints=[_c("appVersion", "SEMVER_LTE", ["1.0.0"], inverted=True), _c("plan", "IN", ["free"])]),
            ),
        ),
        _flag(
            "op_dates",
            _on(
                _s(constraints=[_c("signupDate", "DATE_AFTER", ["2024-06-01T00:00:00Z"])]),
                _s(constraints=[_c("currentTime", "DATE_BEFORE", ["2020-01-01T00:00:00Z"])]),
                _s(constraints=[_c("currentTime", "DATE_AFTER", ["2021-01-01T00:00:00Z"]), _c("plan", "IN", ["x"])]),
            ),
        ),
        _flag(
            "op_regex",
            _on(
                _s(constraints=[_c("userId", "REGEX", ["^user-[0-9]*7$"])]),
                _s(constraints=[_c("email", "REGEX", ["^ADMIN@"], ci=True)]),
            ),
        ),
        _flag(
            "op_cidr",
            _on(
                _s(constraints=[_c("remoteAddress", "IN_CIDR", ["10.0.0.0/8", "192.168.1.0/24", "2001:db8::/32"])]),
                _s("remoteAddress", parameters={"IPs": "172.16.0.1, 172.16.0.2"}),
            ),
        ),
        _flag("segments_both", _on(_s(rollout=50, segments=["paying", "nordic"]))),
        _flag("segment_or_rule", _on(_s(segments=["nordic"], constraints=[_c("age", "NUM_LT", ["30"])]))),
        _flag("rollout_default", _on(_s(rollout=30))),
        _flag("rollout_group", _on(_s(rollout=60, group_id="shared-group"))),
        _flag("rollout_user_id", _on(_s(rollout=45, stickiness="userId"))),
        _flag("rollout_session_id", _on(_s(rollout=55, stickiness="sessionId"))),
        _flag("rollout_tenant", _on(_s(rollout=50, stickiness="tenantId"))),
        _flag("gradual_user", _on(_s("gradualRolloutUserId", rollout=40, group_id="g1"))),
        _flag("gradual_session", _on(_s("gradualRolloutSessionId", rollout=35))),
        _flag("users_then_rollout", {"enabled": True, "rollout_percent": 25, "targeting_keys": ["user-1", "user-2"]}),
        _flag("users_only", _on(_s("userWithId", user_ids=["user-3", "user-33", "user-333"]))),
        _flag("everyone", _on(_s("default"))),
        _flag("nobody", {"enabled": False, "strategies": [_s("default")], "variants": []}),
        _flag(
            "flag_variants",
            _on(
                _s(rollout=80),
                variants=[
                    _v("blue", 1, overrides=[{"field": "userId", "values": ["user-5", "user-6"]}]),
                    _v("green", 2),
                    _v("red", 3),
                ],
            ),
        ),
        _flag(
            "flag_variants_tenant",
            _on(_s("default"), variants=[_v("a", 50, stickiness="tenantId"), _v("b", 50, stickiness="tenantId")]),
        ),
        _flag(
            "strategy_variants",
            _on(
                _s(
                    rollout=70,
                    stickiness="tenantId",
                    group_id="sv",
                    constraints=[_c("plan", "IN", ["pro", "team", "free"])],
                    variants=[_v("small", 1, stickiness="tenantId"), _v("large", 3, stickiness="tenantId")],
                ),
                _s(segments=["nordic"], variants=[_v("nordic", 1, overrides=[{"field": "plan", "values": ["team"]}])]),
            ),
        ),
        _flag(
            "string_flag",
            _on(
                _s(
                    rollout=90,
                    variants=[
                        _v("short", 1, value="hi", payload_type="string"),
                        _v("long", 1, value="hello there", payload_type="string"),
                    ],
                ),
            ),
            type="string",
            default_value="none",
        ),
        _flag(
            "number_flag",
            _on(
                _s(
                    variants=[
                        _v("five", 1, value=5, payload_type="number"),
                        _v("pi", 2, value=3.25, payload_type="number"),
                    ]
                )
            ),
            type="number",
            default_value=0,
        ),
        _flag(
            "object_flag",
            _on(_s(variants=[_v("cfg", 1, value={"limit": 3, "modes": ["a", "b"]}, payload_type="json")])),
            type="object",
        ),
        _flag("child_on", _on(_s("default")), dependencies=[{"feature": "rollout_default"}]),
        _flag("child_off", _on(_s("default")), dependencies=[{"feature": "op_in", "enabled": False}]),
        _flag(
            "child_variant",
            _on(_s("default")),
            dependencies=[{"feature": "flag_variants", "variants": ["green", "red"]}],
        ),
    ],
}

COUNTRIES = ["se", "SE", "no", "dk", " dk", "fi", "us", "de", ""]
PLANS = ["free", "Free", "pro", "PRO", "team", "Team", "trial", "x"]
EMAILS = ["admin@corp.io", "ADMIN@corp.io", "ops.x@y.org", "a@example.com", "b+test@example.com", "qa@z", "Qa.lead@x"]
AGES = ["17", "18", "19", "18.0", "65", "65.5", "7.5", "-1", "abc", "1e2", "30", " 40"]
VERSIONS = ["1.0.0", "0.9.9", "2.0.0", "2.0.0-beta", "2.5.1", "3.0.0-rc.1", "3.0.0-rc.0", "3.0.0", "4.1.0", "v2", "2.0"]
DATES = ["2024-06-01T00:00:00Z", "2024-06-01T00:00:01Z", "2023-01-01T12:00:00+02:00", "2025-02-03T04:05:06.789Z", "x"]
ADDRESSES = ["10.1.2.3", "192.168.1.77", "192.168.2.1", "172.16.0.1", "172.16.0.3", "2001:db8::1", "::1", "nope"]


def _contexts(count: int) -> list[dict[str, Any]]:
    rng = random.Random(20)  # noqa: S311 - test data, fixed seed
    out = []
    for _ in range(count):
        ctx: dict[str, Any] = {}
        if rng.random() < 0.9:
            ctx["userId"] = f"user-{rng.randrange(10000)}" if rng.random() < 0.97 else f"user-{rng.randrange(1, 7)}"
        if rng.random() < 0.5:
            ctx["sessionId"] = f"s{rng.randrange(100000)}"
        if rng.random() < 0.7:
            ctx["remoteAddress"] = rng.choice(ADDRESSES)
        props: dict[str, str] = {}
        for name, pool, p in (
            ("country", COUNTRIES, 0.8),
            ("plan", PLANS, 0.8),
            ("email", EMAILS, 0.6),
            ("age", AGES, 0.6),
            ("score", ["99", "100", "999", "1000", "5000"], 0.4),
            ("appVersion", VERSIONS, 0.7),
            ("signupDate", DATES, 0.5),
            ("tenantId", [f"t{i}" for i in range(40)], 0.6),
        ):
            if rng.random() < p:
                props[name] = rng.choice(pool)
        ctx["properties"] = props
        out.append(ctx)
    return out


def _import(tmp_path: Any, document: dict[str, Any], *extra: str) -> None:
    path = tmp_path / "flags.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    call_command("import_flags", str(path), *extra, stdout=io.StringIO())


def _sdk(live_server: Any, token: str, tmp_path: Any, **options: Any) -> UnleashClient:
    client = UnleashClient(
        url=f"{live_server.url}/api",
        app_name=APP,
        environment=SDK_ENVIRONMENT,
        instance_id=options.pop("instance_id", "parity-1"),
        custom_headers={"Authorization": token},
        cache_directory=str(tmp_path / "unleash-cache"),
        multiple_instance_mode=InstanceAllowType.SILENTLY_ALLOW,
        request_retries=0,
        **options,
    )
    client.initialize_client()
    return client


def _ofrep_context(ctx: dict[str, Any]) -> dict[str, Any]:
    """The SDK's context as OFREP's: the user id is the targeting key, properties flat; the SDK adds its
    app name and environment to every context, so they are sent too."""
    out: dict[str, Any] = {"appName": APP, "environment": SDK_ENVIRONMENT}
    out.update({k: v for k, v in ctx.items() if k not in ("properties", "userId")})
    out.update(ctx.get("properties") or {})
    if "userId" in ctx:
        out["targetingKey"] = ctx["userId"]
    return out


def _payload_value(payload: dict[str, Any], flag_type: str) -> Any:
    if flag_type == "number":
        number = float(payload["value"])
        return int(number) if number.is_integer() and "." not in payload["value"] else number
    if flag_type == "object":
        return json.loads(payload["value"])
    return payload["value"]


def _sdk_answer(sdk: UnleashClient, name: str, ctx: dict[str, Any]) -> tuple[bool, str, Any]:
    enabled = sdk.is_enabled(name, dict(ctx))
    variant = sdk.get_variant(name, dict(ctx))
    return enabled, variant["name"], variant.get("payload")


def _ofrep_answer(item: dict[str, Any], flag_type: str) -> tuple[bool, str, Any]:
    enabled = item["value"] if flag_type == "boolean" else item["metadata"]["enabled"]
    name = item.get("variant") or "disabled"
    if flag_type == "boolean" and name in ("on", "off"):
        name = "disabled"
    return enabled, name, item.get("value")


def test_the_sdk_evaluates_locally_as_the_control_plane_does(live_server, make_token, client, tmp_path, capsys):
    _import(tmp_path, FIXTURE)
    token = make_token("flags:read", name="parity")
    types = {f["name"]: f.get("type", "boolean") for f in FIXTURE["flags"]}
    sdk = _sdk(live_server, token, tmp_path, metrics_interval=3600)
    try:
        assert set(sdk.feature_definitions()) == set(types), "the SDK did not load every flag"
        client.defaults["HTTP_AUTHORIZATION"] = f"Bearer {token}"
        compared = coin_tosses = 0
        differences: dict[str, list[str]] = {}
        for ctx in _contexts(CONTEXTS):
            response = client.post(
                "/ofrep/v1/evaluate/flags",
                data=json.dumps({"context": _ofrep_context(ctx)}),
                content_type="application/json",
            )
            assert response.status_code == 200, response.content
            answers = {item["key"]: item for item in response.json()["flags"]}
            assert set(answers) == set(types)
            for name, flag_type in types.items():
                item = answers[name]
                if item.get("errorCode") == "TARGETING_KEY_MISSING":
                    coin_tosses += 1
                    continue
                ours = _ofrep_answer(item, flag_type)
                enabled, variant, payload = _sdk_answer(sdk, name, ctx)
                same = (enabled, variant) == ours[:2]
                if same and flag_type != "boolean" and payload is not None:
                    same = _payload_value(payload, flag_type) == ours[2]
                if not same:
                    differences.setdefault(name, []).append(f"{ctx}: SDK {(enabled, variant, payload)} OFREP {item}")
                compared += 1
        with capsys.disabled():
            print(  # noqa: T201
                f"\n{CONTEXTS} contexts x {len(types)} flags: {compared} answers compared between the SDK and OFREP "
                f"({sum(map(len, differences.values()))} differ), {coin_tosses} coin tosses not compared"
            )
            for name, found in differences.items():
                print(f"  {name}: {len(found)} differ, first: {found[0]}")  # noqa: T201
        # Per flag: how many differ, and the first.
        assert {name: (len(found), found[0]) for name, found in differences.items()} == {}
        assert compared > CONTEXTS * len(types) * 0.7
    finally:
        sdk.destroy()  # sends the metrics it counted
    instance = SdkInstance.objects.get(app_name=APP, instance_id="parity-1")
    assert instance.environment.name == "production" and instance.sdk_version.startswith("unleash-python-sdk:")
    usage = {row.flag: row for row in FlagUsage.objects.filter(environment__name="production")}
    # Two calls per compared context and flag (is_enabled and get_variant), each counted by the SDK.
    assert set(usage) == set(types)
    assert sum(row.yes + row.no for row in usage.values()) >= 2 * compared
    assert sum(usage["flag_variants"].variants.values()) > 0


def _frontend_toggles(client: Any, token: str, ctx: dict[str, Any]) -> dict[str, Any]:
    response = client.post(
        "/api/frontend",
        data=json.dumps({"context": ctx}),
        content_type="application/json",
        HTTP_AUTHORIZATION=token,
    )
    assert response.status_code == 200, response.content
    return {t["name"]: t for t in response.json()["toggles"]}


@pytest.mark.parametrize("name", FILES, ids=[f.removesuffix(".json") for f in FILES])
def test_conformance_through_the_sdk_and_the_frontend_api(name, live_server, make_token, client, tmp_path, capsys):
    data = json.loads((SPEC / name).read_text(encoding="utf-8"))
    _import(tmp_path, data["state"])
    reader = make_token("flags:read", name="conformance")
    browser = make_token("flags:frontend", name="browser")
    sdk = _sdk(live_server, reader, tmp_path, disable_metrics=True, instance_id=f"conformance-{name}")
    snap = current()
    flags = snap.flags_in("production")
    passed_sdk = passed_frontend = chance = 0
    failures = []
    try:
        for kind in ("tests", "variantTests"):
            for case in data.get(kind, []):
                expected, ctx = case["expectedResult"], case["context"]
                toggle = case["toggleName"]
                if kind == "tests":
                    got_sdk: Any = sdk.is_enabled(toggle, dict(ctx))
                else:
                    got_sdk = sdk.get_variant(toggle, dict(ctx))
                if got_sdk == expected:
                    passed_sdk += 1
                else:
                    failures.append(f"SDK {kind}: {case['description']}: {got_sdk!r} != {expected!r}")
                flag = flags.get(toggle)
                if flag is not None and evaluate(flag.engine(), Context.of(ctx), snap.lookup("production")).by_chance:
                    chance += 1  # a coin toss on the server: the frontend API cannot be compared
                    continue
                listed = _frontend_toggles(client, browser, ctx).get(toggle)
                if kind == "tests":
                    got_front: Any = listed is not None
                else:
                    got_front = (
                        dict(listed["variant"])
                        if listed
                        else {"name": "disabled", "enabled": False, "feature_enabled": False}
                    )
                if got_front == expected:
                    passed_frontend += 1
                else:
                    failures.append(f"frontend {kind}: {case['description']}: {got_front!r} != {expected!r}")
    finally:
        sdk.destroy()
    with capsys.disabled():
        print(  # noqa: T201
            f"\n{name}: {passed_sdk} cases passed through the client API and the SDK, {passed_frontend} through "
            f"the frontend API ({chance} coin tosses not compared there)"
        )
    assert failures == []
