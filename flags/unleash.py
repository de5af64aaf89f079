"""Unleash's protocol: the client API's features document and the frontend API's answers.

The features document (``GET /api/client/features``, Unleash's version 2 format) is every flag of one
environment as Unleash's client SDKs read it, so that they evaluate locally exactly as the engine
(flags/targeting.py) does: strategies with their parameters as strings, constraints, variants with
payloads and overrides, dependencies, and the segments as one top-level list referenced by id. It is
built from the snapshot's documents once per snapshot and environment and kept serialised; its ETag is
the snapshot's digest and the environment, so a 304 costs no serialisation.

Where our model says more than Unleash's can, the document says the same in Unleash's words:

- ``IN`` / ``NOT_IN`` with ``case_insensitive`` (our addition; the SDKs ignore the flag there) is sent as
  a ``REGEX`` that matches the same values whatever their case, inverted for ``NOT_IN`` (a missing field
  then gives what ``NOT_IN`` gives).
- ``IN`` / ``NOT_IN`` values are sent trimmed, empty ones left out, as the engine compares them.
- A segment a strategy names but that does not exist gets an id no segment has: the SDKs then never
  match the strategy, as the engine does not.
- The group id of a rollout defaults to the flag's name; it is written out.

The frontend API (``/api/frontend``) evaluates every flag of the token's environment for one context
on the server and answers the enabled ones with their variant, as unleash-proxy-client reads them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from controlplane.api import ApiError
from flags.definitions import ROLLOUT_KINDS
from flags.evaluation import answer
from flags.snapshot import Snapshot
from flags.targeting import (
    CASE_OPERATORS,
    IN,
    LIST_OPERATORS,
    NOT_IN,
    REGEX,
    Context,
    InvalidTargeting,
)

# Unleash parameters that our strategies keep in their own fields (written back from them).
_OWN_PARAMETERS = frozenset({"rollout", "percentage", "stickiness", "groupId", "userIds"})
# Characters RE2 reads as syntax: escaped with a backslash (RE2 refuses some other escapes, like "\ ").
_RE2_SPECIAL = frozenset("\\.+*?()|[]{}^$")


def _re2_literal(text: str) -> str:
    return "".join(f"\\{c}" if c in _RE2_SPECIAL else c for c in text)


def constraint_json(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A constraint document as Unleash's: ``values`` for the list operators, ``value`` for the others."""
    operator, values = doc["operator"], list(doc["values"])
    inverted, ci = bool(doc["inverted"]), bool(doc["case_insensitive"])
    if operator in (IN, NOT_IN) and ci:
        cleaned = [v.strip() for v in values if v and v.strip()]
        if cleaned:
            pattern = "^(?:" + "|".join(_re2_literal(v) for v in cleaned) + ")$"
            return {
                "contextName": doc["field"],
                "operator": REGEX,
                "value": pattern,
                "values": [],
                "caseInsensitive": True,
                "inverted": inverted != (operator == NOT_IN),
            }
        ci = False  # no value to compare: the case cannot matter
    if operator in (IN, NOT_IN):
        # The engine compares with the values trimmed and empty ones dropped (the SDKs' cleanValues);
        # Unleash's engine in the SDKs compares them as sent: so they are sent cleaned.
        values = [v.strip() for v in values if v and v.strip()]
    out: dict[str, Any] = {"contextName": doc["field"], "operator": operator}
    if operator in LIST_OPERATORS or len(values) != 1:
        out["values"] = values
    else:
        out["value"] = values[0]
        out["values"] = []
    out["caseInsensitive"] = ci and operator in CASE_OPERATORS
    out["inverted"] = inverted
    return out


def variant_json(doc: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": doc["name"],
        "weight": doc["weight"],
        "weightType": "variable",
        "stickiness": doc["stickiness"] or "default",
    }
    if doc["payload_type"]:
        value = doc["value"]
        text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
        out["payload"] = {"type": doc["payload_type"], "value": text}
    if doc["overrides"]:
        out["overrides"] = [{"contextName": o["field"], "values": list(o["values"])} for o in doc["overrides"]]
    return out


def strategy_json(doc: Mapping[str, Any], flag_name: str, segment_ids: dict[str, int]) -> dict[str, Any]:
    kind = doc["kind"]
    params = {k: str(v) for k, v in doc["parameters"].items() if k not in _OWN_PARAMETERS}
    group = doc["group_id"] or flag_name
    if kind == "flexibleRollout":
        params.update(rollout=str(doc["rollout"] or 0), stickiness=doc["stickiness"] or "default", groupId=group)
    elif kind in ROLLOUT_KINDS:
        params.update(percentage=str(doc["rollout"] or 0), groupId=group)
    elif kind == "userWithId":
        params["userIds"] = ",".join(doc["user_ids"])
    refs = [*doc["segments"], *(str(m) for m in doc["missing_segments"])]
    out: dict[str, Any] = {
        "name": kind,
        "parameters": params,
        "constraints": [constraint_json(c) for c in doc["constraints"]],
        "segments": [_segment_id(segment_ids, name) for name in refs],
        "variants": [variant_json(v) for v in doc["variants"]],
        "disabled": False,
    }
    if doc["title"]:
        out["title"] = doc["title"]
    return out


def _segment_id(segment_ids: dict[str, int], name: str) -> int:
    """The segment's id; a name no segment has gets an id of its own, which no segment in the document
    carries (the SDKs then never match the strategy, as the engine does not)."""
    found = segment_ids.get(name)
    if found is None:
        found = segment_ids[name] = max(segment_ids.values(), default=0) + 1
    return found


def feature_json(flag: Mapping[str, Any], environment: str, segment_ids: dict[str, int]) -> dict[str, Any]:
    state = flag["environments"].get(environment) or {"enabled": False, "strategies": [], "variants": []}
    out: dict[str, Any] = {
        "name": flag["name"],
        "type": "release",
        "description": flag["description"],
        "project": "default",
        "enabled": bool(state["enabled"]),
        "stale": False,
        "impressionData": False,
        "strategies": [strategy_json(s, flag["name"], segment_ids) for s in state["strategies"]],
        "variants": [variant_json(v) for v in state["variants"]],
    }
    if flag["dependencies"]:
        out["dependencies"] = [
            {"feature": d["feature"], "enabled": d["enabled"], "variants": list(d["variants"])}
            for d in flag["dependencies"]
        ]
    return out


def features_document(content: Mapping[str, Any], environment: str) -> dict[str, Any]:
    """Unleash's version 2 features document for ``environment`` from the snapshot's content."""
    segments = sorted(content["segments"], key=lambda s: s["name"])
    segment_ids = {s["name"]: index for index, s in enumerate(segments, start=1)}
    known = dict(segment_ids)  # the strategies add the missing names' ids to segment_ids
    return {
        "version": 2,
        "features": [feature_json(f, environment, segment_ids) for f in content["flags"]],
        "segments": [
            {
                "id": known[s["name"]],
                "name": s["name"],
                "constraints": [constraint_json(c) for c in s["constraints"]],
            }
            for s in segments
        ],
        "query": {"environment": environment, "inlineSegmentConstraints": False},
    }


# The serialised document per (snapshot digest, environment): built on the first request after a change.
_bodies: dict[tuple[str, str], bytes] = {}


def features_etag(snap: Snapshot, environment: str) -> str:
    return f'"{snap.digest}:{environment}"'


def features_body(snap: Snapshot, environment: str) -> bytes:
    key = (snap.digest, environment)
    body = _bodies.get(key)
    if body is None:
        if len(_bodies) > 32:  # older snapshots' documents: never asked for again
            _bodies.clear()
        body = _bodies[key] = json.dumps(
            features_document(snap.content, environment), separators=(",", ":"), ensure_ascii=False
        ).encode()
    return body


# --- Frontend API -----------------------------------------------------------------------------------

_CONTEXT_FIELDS = ("userId", "sessionId", "remoteAddress", "appName", "environment", "currentTime")
MAX_CONTEXT_VALUE = 1000


def _scalar(value: Any, where: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        text = str(value)
        if len(text) > MAX_CONTEXT_VALUE:
            raise ApiError(400, "invalid_context", f"{where} is longer than {MAX_CONTEXT_VALUE}", field=where)
        return text
    raise ApiError(400, "invalid_context", f"{where} must be a string, a number or true/false", field=where)


def frontend_context(data: Mapping[str, Any]) -> dict[str, Any]:
    """An Unleash context (``userId``, ``sessionId``, ``remoteAddress``, ``properties``, ...) checked:
    scalar values only; any other top-level field is a property, as Unleash's frontend API reads it."""
    context: dict[str, Any] = {}
    properties: dict[str, str] = {}
    for key, value in data.items():
        if key == "properties":
            if value is None:
                continue
            if not isinstance(value, dict):
                raise ApiError(400, "invalid_context", "properties must be an object", field="context.properties")
            for name, item in value.items():
                text = _scalar(item, f"context.properties.{name}")
                if text is not None:
                    properties[name] = text
        elif key in _CONTEXT_FIELDS:
            text = _scalar(value, f"context.{key}")
            if text is not None:
                context[key] = text
        else:
            text = _scalar(value, f"context.{key}")
            if text is not None:
                properties[key] = text
    if properties:
        context["properties"] = properties
    return context


def context_from_query(query: Mapping[str, list[str]]) -> dict[str, Any]:
    """unleash-proxy-client's GET: ``?userId=..&sessionId=..&properties[plan]=pro`` (the last value of a
    repeated name)."""
    data: dict[str, Any] = {}
    properties: dict[str, str] = {}
    for key, values in query.items():
        value = values[-1] if values else ""
        if key.startswith("properties[") and key.endswith("]"):
            properties[key[len("properties[") : -1]] = value
        else:
            data[key] = value
    if properties:
        data["properties"] = properties
    return data


def frontend_toggles(snap: Snapshot, environment: str, context: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The enabled flags for ``context``, each with its variant, as Unleash's frontend API lists them."""
    try:
        ctx = Context.of(context)
    except InvalidTargeting as exc:
        where = f"context.{exc.field}"
        raise ApiError(400, "invalid_context", f"{where}: {exc.message}", field=where) from None
    lookup = snap.lookup(environment)
    toggles = []
    for name, flag in snap.flags_in(environment).items():
        result = answer(flag, ctx, lookup)
        if not result.enabled:
            continue
        v = result.variant
        variant: dict[str, Any]
        if v is None:
            variant = {"name": "disabled", "enabled": False, "feature_enabled": True}
        else:
            variant = {"name": v.name, "enabled": True, "feature_enabled": True}
            if v.payload is not None:
                variant["payload"] = {"type": v.payload[0], "value": v.payload[1]}
        toggles.append({"name": name, "enabled": True, "variant": variant, "impressionData": False})
    return toggles
