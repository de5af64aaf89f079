"""Flags as documents: the rows read into one JSON-able form, checked, and compiled into the engine's
``FlagDefinition`` per environment.

One document shape serves the snapshot (its digest), ``export_flags`` / ``import_flags``, the audit
trail and the services' change detection, so what is exported is exactly what is evaluated:

    {"segments": [{"name", "description", "constraints": [constraint]}],
     "flags": [{"name", "type", "default_value", "description", "owner",
                "dependencies": [{"feature", "enabled", "variants"}],
                "environments": {"<environment>": state}}]}

    state      = {"enabled", "strategies": [strategy], "variants": [variant]}
                 or today's one line {"enabled", "rollout_percent", "targeting_keys"} (simple strategies)
    strategy   = {"kind", "title", "rollout", "stickiness", "group_id", "user_ids", "parameters",
                  "segments": [segment name], "missing_segments", "constraints", "variants"}
    constraint = {"field", "operator", "values", "case_insensitive", "inverted"}
    variant    = {"name", "value", "weight", "stickiness", "payload_type", "overrides": [{"field", "values"}]}
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from flags import targeting
from flags.targeting import InvalidTargeting

if TYPE_CHECKING:
    from flags.models import Flag, FlagState, Segment
    from flags.models import Strategy as StrategyRow

ROLLOUT_KINDS = frozenset(
    {"flexibleRollout", "gradualRolloutUserId", "gradualRolloutSessionId", "gradualRolloutRandom"}
)
# Unleash parameters that have their own columns (read back from them when compiling).
_OWN_PARAMETERS = frozenset({"rollout", "percentage", "stickiness", "groupId", "userIds"})
STRATEGY_KEYS = (
    "kind",
    "title",
    "rollout",
    "stickiness",
    "group_id",
    "user_ids",
    "parameters",
    "segments",
    "missing_segments",
    "constraints",
    "variants",
)
CONSTRAINT_KEYS = ("field", "operator", "values", "case_insensitive", "inverted")
VARIANT_KEYS = ("name", "value", "weight", "stickiness", "payload_type", "overrides")
SIMPLE_KEYS = ("enabled", "rollout_percent", "targeting_keys")


class DocumentError(Exception):
    """A part of a flag document that cannot be used; ``field`` is its path (``strategies.0.rollout``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


# --- Rows -> documents --------------------------------------------------------------------------------


def constraint_doc(row: Any) -> dict[str, Any]:
    return {
        "field": row.field,
        "operator": row.operator,
        "values": [str(v) for v in row.values],
        "case_insensitive": row.case_insensitive,
        "inverted": row.inverted,
    }


def variant_doc(row: Any) -> dict[str, Any]:
    return {
        "name": row.name,
        "value": row.value,
        "weight": row.weight,
        "stickiness": row.stickiness or "default",
        "payload_type": row.payload_type,
        "overrides": [{"field": o["field"], "values": list(o["values"])} for o in row.overrides],
    }


def strategy_doc(row: StrategyRow) -> dict[str, Any]:
    return {
        "kind": row.kind,
        "title": row.title,
        "rollout": row.rollout,
        "stickiness": row.stickiness or "default",
        "group_id": row.group_id,
        "user_ids": sorted(row.user_ids),
        "parameters": {str(k): str(v) for k, v in sorted(row.parameters.items())},
        "segments": sorted(s.name for s in row.segments.all()),
        "missing_segments": list(row.missing_segments),
        "constraints": [constraint_doc(c) for c in row.constraints.all()],
        "variants": [variant_doc(v) for v in row.variants.all()],
    }


def state_doc(state: FlagState) -> dict[str, Any]:
    """The full form (strategies and variants), whatever the state holds."""
    return {
        "enabled": state.enabled,
        "strategies": [strategy_doc(s) for s in state.strategies.all()],
        "variants": [variant_doc(v) for v in state.variants.all()],
    }


def flag_doc(flag: Flag) -> dict[str, Any]:
    return {
        "name": flag.name,
        "type": flag.type,
        "default_value": flag.default_value,
        "description": flag.description,
        "owner": flag.owner,
        "dependencies": [
            {"feature": d.parent, "enabled": d.enabled, "variants": list(d.variants)} for d in flag.dependencies.all()
        ],
        "environments": {s.environment.name: state_doc(s) for s in flag.states.all()},
    }


def segment_doc(segment: Segment) -> dict[str, Any]:
    return {
        "name": segment.name,
        "description": segment.description,
        "constraints": [constraint_doc(c) for c in segment.constraints.all()],
    }


def flags_queryset() -> Any:
    """Every flag with all it holds, in a fixed number of queries."""
    from django.db.models import Prefetch

    from flags.models import Flag, FlagState, Strategy

    strategies = Strategy.objects.prefetch_related("constraints", "variants", "segments")
    states = FlagState.objects.select_related("environment").prefetch_related(
        Prefetch("strategies", queryset=strategies), "variants"
    )
    return Flag.objects.order_by("name").prefetch_related(Prefetch("states", queryset=states), "dependencies")


def read_document() -> dict[str, Any]:
    """Everything, as stored (full state form)."""
    from flags.models import Segment

    return {
        "segments": [segment_doc(s) for s in Segment.objects.prefetch_related("constraints")],
        "flags": [flag_doc(f) for f in flags_queryset()],
    }


def simple_of(doc: Mapping[str, Any], flag_name: str) -> dict[str, Any] | None:
    """Today's one line ({"enabled", "rollout_percent", "targeting_keys"}) for a full state, when its
    strategies are today's simple ones: named users, then one plain rollout by the targeting key with
    the flag name as group. None for anything else."""
    strategies = list(doc["strategies"])
    if doc["variants"]:
        return None
    keys: list[str] = []
    if len(strategies) == 2 and strategies[0]["kind"] == "userWithId" and _plain(strategies[0]):
        keys = list(strategies[0]["user_ids"])
        if not keys:
            return None
        strategies = strategies[1:]
    if len(strategies) != 1:
        return None
    rollout = strategies[0]
    if rollout["kind"] != "flexibleRollout" or not _plain(rollout):
        return None
    if rollout["stickiness"] != "default" or rollout["group_id"] not in ("", flag_name):
        return None
    return {"enabled": doc["enabled"], "rollout_percent": rollout["rollout"] or 0, "targeting_keys": keys}


def _plain(s: Mapping[str, Any]) -> bool:
    return not (
        s["title"] or s["parameters"] or s["segments"] or s["missing_segments"] or s["constraints"] or s["variants"]
    )


def simple_state(enabled: bool, rollout_percent: int, targeting_keys: Iterable[str]) -> dict[str, Any]:
    """The full form of today's one line."""
    keys = sorted(set(targeting_keys))
    strategies = []
    if keys:
        strategies.append(_strategy(kind="userWithId", user_ids=keys))
    strategies.append(_strategy(kind="flexibleRollout", rollout=rollout_percent))
    return {"enabled": enabled, "strategies": strategies, "variants": []}


def _strategy(**values: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "kind": "flexibleRollout",
        "title": "",
        "rollout": None,
        "stickiness": "default",
        "group_id": "",
        "user_ids": [],
        "parameters": {},
        "segments": [],
        "missing_segments": [],
        "constraints": [],
        "variants": [],
    }
    base.update(values)
    return base


def export_state(doc: Mapping[str, Any], flag_name: str) -> dict[str, Any]:
    """The state as exported: today's one line when it is simple, else the full form."""
    return simple_of(doc, flag_name) or dict(doc)


# --- Documents checked ------------------------------------------------------------------------------


def _type(value: Any, kind: type | tuple[type, ...], where: str, words: str) -> Any:
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise DocumentError(where, f"must be {words}")
    return value


def _keys(data: Any, allowed: Iterable[str], where: str) -> Mapping[str, Any]:
    if not isinstance(data, dict):
        raise DocumentError(where, "must be an object")
    allowed = tuple(allowed)
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        path = f"{where}.{unknown[0]}" if where else unknown[0]
        raise DocumentError(path, f"unknown field; known fields: {', '.join(allowed)}")
    return data


def _strings(value: Any, where: str) -> list[str]:
    _type(value, list, where, "a list of strings")
    for i, item in enumerate(value):
        _type(item, str, f"{where}.{i}", "a string")
    return list(value)


def clean_constraint(data: Any, where: str, *, strict: bool = True) -> dict[str, Any]:
    """Checked against its operator by the engine's Constraint: a bad value is an error naming it."""
    data = _keys(data, CONSTRAINT_KEYS, where)
    clean = {
        "field": _type(data.get("field", ""), str, f"{where}.field", "text"),
        "operator": _type(data.get("operator", ""), str, f"{where}.operator", "text"),
        "values": _strings(data.get("values", []), f"{where}.values"),
        "case_insensitive": _type(
            data.get("case_insensitive", False), bool, f"{where}.case_insensitive", "true or false"
        ),
        "inverted": _type(data.get("inverted", False), bool, f"{where}.inverted", "true or false"),
    }
    if strict:
        try:
            compile_constraint(clean, strict=True)
        except InvalidTargeting as exc:
            raise DocumentError(f"{where}.{exc.field}", exc.message) from None
    return clean


def clean_variant(data: Any, where: str) -> dict[str, Any]:
    data = _keys(data, VARIANT_KEYS, where)
    weight = data.get("weight", 1000)
    if isinstance(weight, bool) or not isinstance(weight, int) or weight < 0:
        raise DocumentError(f"{where}.weight", f"{weight!r} is not a weight (a whole number, 0 or more)")
    name = _type(data.get("name", ""), str, f"{where}.name", "text")
    if not name:
        raise DocumentError(f"{where}.name", "a variant needs a name")
    overrides = []
    for i, o in enumerate(_type(data.get("overrides", []), list, f"{where}.overrides", "a list")):
        o = _keys(o, ("field", "values"), f"{where}.overrides.{i}")
        overrides.append(
            {
                "field": _type(o.get("field", ""), str, f"{where}.overrides.{i}.field", "text"),
                "values": _strings(o.get("values", []), f"{where}.overrides.{i}.values"),
            }
        )
    return {
        "name": name,
        "value": data.get("value"),
        "weight": weight,
        "stickiness": _type(data.get("stickiness", "default"), str, f"{where}.stickiness", "text") or "default",
        "payload_type": _type(data.get("payload_type", ""), str, f"{where}.payload_type", "text"),
        "overrides": overrides,
    }


def clean_strategy(data: Any, where: str, *, strict: bool = True) -> dict[str, Any]:
    data = _keys(data, STRATEGY_KEYS, where)
    kind = _type(data.get("kind", "flexibleRollout"), str, f"{where}.kind", "text")
    if strict and kind not in targeting.STRATEGIES:
        raise DocumentError(
            f"{where}.kind", f"unknown strategy {kind!r}; known: {', '.join(sorted(targeting.STRATEGIES))}"
        )
    rollout = data.get("rollout")
    if rollout is not None and (isinstance(rollout, bool) or not isinstance(rollout, int) or not 0 <= rollout <= 100):
        raise DocumentError(f"{where}.rollout", "must be a whole number from 0 to 100")
    if kind in ROLLOUT_KINDS and rollout is None:
        rollout = 0
    params = _type(data.get("parameters", {}), dict, f"{where}.parameters", "an object")
    for key, value in params.items():
        _type(value, str, f"{where}.parameters.{key}", "text")
    return _strategy(
        kind=kind,
        title=_type(data.get("title", ""), str, f"{where}.title", "text"),
        rollout=rollout,
        stickiness=_type(data.get("stickiness", "default"), str, f"{where}.stickiness", "text") or "default",
        group_id=_type(data.get("group_id", ""), str, f"{where}.group_id", "text"),
        user_ids=sorted(set(_strings(data.get("user_ids", []), f"{where}.user_ids"))),
        parameters=dict(sorted(params.items())),
        segments=sorted(_strings(data.get("segments", []), f"{where}.segments")),
        missing_segments=list(_type(data.get("missing_segments", []), list, f"{where}.missing_segments", "a list")),
        constraints=[
            clean_constraint(c, f"{where}.constraints.{i}", strict=strict)
            for i, c in enumerate(_type(data.get("constraints", []), list, f"{where}.constraints", "a list"))
        ],
        variants=[
            clean_variant(v, f"{where}.variants.{i}")
            for i, v in enumerate(_type(data.get("variants", []), list, f"{where}.variants", "a list"))
        ],
    )


def clean_state(data: Any, where: str, *, strict: bool = True) -> dict[str, Any]:
    """A state in either form, as the full form. Today's one line must be whole here (all three)."""
    if isinstance(data, dict) and ("rollout_percent" in data or "targeting_keys" in data):
        data = _keys(data, SIMPLE_KEYS, where)
        rollout = data.get("rollout_percent", 0)
        if isinstance(rollout, bool) or not isinstance(rollout, int) or not 0 <= rollout <= 100:
            raise DocumentError(f"{where}.rollout_percent", "must be a whole number from 0 to 100")
        enabled = _type(data.get("enabled", False), bool, f"{where}.enabled", "true or false")
        return simple_state(enabled, rollout, _strings(data.get("targeting_keys", []), f"{where}.targeting_keys"))
    data = _keys(data, ("enabled", "strategies", "variants"), where)
    return {
        "enabled": _type(data.get("enabled", False), bool, f"{where}.enabled", "true or false"),
        "strategies": [
            clean_strategy(s, f"{where}.strategies.{i}", strict=strict)
            for i, s in enumerate(_type(data.get("strategies", []), list, f"{where}.strategies", "a list"))
        ],
        "variants": [
            clean_variant(v, f"{where}.variants.{i}")
            for i, v in enumerate(_type(data.get("variants", []), list, f"{where}.variants", "a list"))
        ],
    }


def clean_segment(data: Any, where: str, *, strict: bool = True) -> dict[str, Any]:
    data = _keys(data, ("name", "description", "constraints"), where)
    name = _type(data.get("name", ""), str, f"{where}.name", "text")
    if not name or len(name) > 100:
        raise DocumentError(f"{where}.name", "a segment needs a name of 1 to 100 characters")
    return {
        "name": name,
        "description": _type(data.get("description", ""), str, f"{where}.description", "text"),
        "constraints": [
            clean_constraint(c, f"{where}.constraints.{i}", strict=strict)
            for i, c in enumerate(_type(data.get("constraints", []), list, f"{where}.constraints", "a list"))
        ],
    }


def clean_dependencies(data: Any, where: str) -> list[dict[str, Any]]:
    out = []
    for i, d in enumerate(_type(data, list, where, "a list")):
        d = _keys(d, ("feature", "enabled", "variants"), f"{where}.{i}")
        feature = _type(d.get("feature", ""), str, f"{where}.{i}.feature", "text")
        if not feature:
            raise DocumentError(f"{where}.{i}.feature", "names the parent flag")
        out.append(
            {
                "feature": feature,
                "enabled": _type(d.get("enabled", True), bool, f"{where}.{i}.enabled", "true or false"),
                "variants": _strings(d.get("variants", []), f"{where}.{i}.variants"),
            }
        )
    return out


# --- Documents compiled -----------------------------------------------------------------------------


def compile_constraint(doc: Mapping[str, Any], *, strict: bool = False) -> targeting.Constraint:
    """Strict: refuse what cannot be evaluated. Not strict (compiling what is stored): keep it as a
    constraint that never matches, as Unleash's SDKs do, so one bad row cannot stop the snapshot."""
    args: dict[str, Any] = {
        "field": doc["field"],
        "operator": doc["operator"],
        "values": tuple(doc["values"]),
        "case_insensitive": doc["case_insensitive"],
        "inverted": doc["inverted"],
    }
    return targeting.Constraint(**args) if strict else targeting.Constraint.lenient(**args)


def _payload_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"))


def compile_variant(doc: Mapping[str, Any]) -> targeting.Variant:
    payload_type = doc["payload_type"]
    return targeting.Variant(
        name=doc["name"],
        value=doc["value"],
        weight=doc["weight"],
        stickiness=doc["stickiness"] or "default",
        overrides=tuple(targeting.Override(o["field"], frozenset(o["values"])) for o in doc["overrides"]),
        payload=(payload_type, _payload_text(doc["value"])) if payload_type else None,
    )


def compile_strategy(doc: Mapping[str, Any], segments: Mapping[str, targeting.Segment]) -> targeting.Strategy:
    kind = doc["kind"]
    params = {k: v for k, v in doc["parameters"].items() if k not in _OWN_PARAMETERS}
    if kind == "flexibleRollout":
        params.update(rollout=str(doc["rollout"] or 0), stickiness=doc["stickiness"], groupId=doc["group_id"])
    elif kind in ROLLOUT_KINDS:
        params.update(percentage=str(doc["rollout"] or 0), groupId=doc["group_id"])
    elif kind == "userWithId":
        params["userIds"] = ",".join(doc["user_ids"])
    missing = list(doc["missing_segments"]) + [n for n in doc["segments"] if n not in segments]
    return targeting.Strategy(
        name=kind,
        parameters=params,
        constraints=tuple(compile_constraint(c) for c in doc["constraints"]),
        segments=tuple(segments[n] for n in doc["segments"] if n in segments),
        missing_segments=tuple(missing),
        variants=tuple(compile_variant(v) for v in doc["variants"]),
        title=doc["title"],
        user_ids=frozenset(doc["user_ids"]) if kind == "userWithId" else frozenset(),
    )


def compile_segments(docs: Iterable[Mapping[str, Any]]) -> dict[str, targeting.Segment]:
    return {
        d["name"]: targeting.Segment(
            id=d["name"], name=d["name"], constraints=tuple(compile_constraint(c) for c in d["constraints"])
        )
        for d in docs
    }


def compile_flag(
    flag: Mapping[str, Any], state: Mapping[str, Any] | None, segments: Mapping[str, targeting.Segment]
) -> targeting.FlagDefinition:
    """The flag in one environment (no state there: off)."""
    dependencies = tuple(
        targeting.Dependency(d["feature"], d["enabled"], tuple(d["variants"])) for d in flag["dependencies"]
    )
    if state is None:
        state = {"enabled": False, "strategies": [], "variants": []}
    return targeting.FlagDefinition(
        name=flag["name"],
        enabled=state["enabled"],
        strategies=tuple(compile_strategy(s, segments) for s in state["strategies"]),
        variants=tuple(compile_variant(v) for v in state["variants"]),
        dependencies=dependencies,
        type=flag["type"],
        default_value=flag["default_value"],
        description=flag["description"],
    )


def check_flag(flag: Mapping[str, Any], segments: Mapping[str, targeting.Segment]) -> None:
    """Compile every state strictly enough to refuse a value of the wrong type (naming where)."""
    for env, state in flag["environments"].items():
        try:
            compile_flag(flag, state, segments)
        except InvalidTargeting as exc:
            raise DocumentError(f"environments.{env}.{exc.field}", exc.message) from None
        for i, s in enumerate(state["strategies"]):
            for name in s["segments"]:
                if name not in segments:
                    raise DocumentError(f"environments.{env}.strategies.{i}.segments", f"no segment named {name!r}")


# --- Unleash's features document --------------------------------------------------------------------


def is_unleash(document: Any) -> bool:
    return isinstance(document, dict) and "features" in document and "flags" not in document


def from_unleash_document(document: Mapping[str, Any]) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """(segments, flags by name) in our document form, each flag with one state (to be put in the
    environment the import names). Read by ``flags.targeting.from_unleash``, which understands every
    strategy the SDKs evaluate, global segments and dependencies."""
    try:
        definitions = targeting.from_unleash(document)
    except InvalidTargeting as exc:
        raise DocumentError(exc.field, exc.message) from None
    names = {}
    segments = []
    for raw in document.get("segments") or ():
        name = str(raw.get("name") or f"unleash-{raw.get('id')}")
        names[raw.get("id")] = name
        segments.append(
            {
                "name": name,
                "description": str(raw.get("description") or ""),
                "constraints": [_constraint_of(c) for c in _seg(raw)],
            }
        )
    flags = {}
    for name, definition in definitions.items():
        flags[name] = {
            "name": name,
            "type": definition.type,
            "default_value": definition.default_value,
            "description": definition.description,
            "owner": "",
            "dependencies": [
                {"feature": d.feature, "enabled": d.enabled, "variants": list(d.variants)}
                for d in definition.dependencies
            ],
            "state": {
                "enabled": definition.enabled,
                "strategies": [_strategy_of(s, names) for s in definition.strategies],
                "variants": [_variant_of(v) for v in definition.variants],
            },
        }
    return segments, flags


def _seg(raw: Mapping[str, Any]) -> list[targeting.Constraint]:
    return [
        targeting.Constraint.lenient(
            str(c.get("contextName", "")),
            str(c.get("operator", "")),
            tuple(str(v) for v in c.get("values") or () if v is not None),
            None if c.get("value") is None else str(c.get("value")),
            bool(c.get("caseInsensitive", False)),
            bool(c.get("inverted", False)),
        )
        for c in raw.get("constraints") or ()
    ]


def _constraint_of(c: targeting.Constraint) -> dict[str, Any]:
    values = [c.value] if c.value is not None else list(c.values)
    return {
        "field": c.field,
        "operator": c.operator,
        "values": values,
        "case_insensitive": c.case_insensitive,
        "inverted": c.inverted,
    }


def _variant_of(v: targeting.Variant) -> dict[str, Any]:
    return {
        "name": v.name,
        "value": v.value,
        "weight": v.weight,
        "stickiness": v.stickiness or "default",
        "payload_type": v.payload[0] if v.payload is not None else "",
        "overrides": [{"field": o.field, "values": sorted(o.values)} for o in v.overrides],
    }


def _strategy_of(s: targeting.Strategy, segment_names: Mapping[Any, str]) -> dict[str, Any]:
    return _strategy(
        kind=s.name,
        title=s.title,
        rollout=s.rollout,
        stickiness=s.stickiness if s.name == "flexibleRollout" else "default",
        group_id=s.group_id or "",
        user_ids=sorted(s.user_ids),
        parameters={k: v for k, v in sorted(s.parameters.items()) if k not in _OWN_PARAMETERS},
        segments=sorted(segment_names[seg.id] for seg in s.segments),
        missing_segments=list(s.missing_segments),
        constraints=[_constraint_of(c) for c in s.constraints],
        variants=[_variant_of(v) for v in s.variants],
    )
