"""OFREP (OpenFeature Remote Evaluation Protocol) and the flags part of the operations API."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from ninja import Field, Router, Schema
from pydantic import BaseModel, ConfigDict, model_validator

from controlplane.api import ApiError, InvalidJson, InvalidText, api_view, load_json
from controlplane.audit import Actor
from controlplane.context import token_environment
from controlplane.errors import InvalidInput
from controlplane.models import DEFAULT_FLAGS_ENVIRONMENT, Scope
from controlplane.openapi import Error, refuse_unknown_fields, token_auth, token_of
from flags import usage
from flags.definitions import flags_queryset
from flags.evaluation import CompiledFlag, TargetingKeyMissing, answer, evaluate, on_for, variant
from flags.models import Flag
from flags.selectors import compiled_of, segments_compiled
from flags.services import MAX_ROLLOUT_PERCENT, MAX_TARGETING_KEY, MIN_ROLLOUT_PERCENT, clean_fields, flag_change
from flags.snapshot import Snapshot, current
from flags.targeting import Context, Explanation, Lookup, Result

# --- OFREP ----------------------------------------------------------------------------------------


class OfrepError(Exception):
    def __init__(self, status: int, code: str, details: str) -> None:
        super().__init__(details)
        self.status, self.code, self.details = status, code, details


def _json(body: Any, status: int = 200) -> HttpResponse:
    return HttpResponse(json.dumps(body, separators=(",", ":")), status=status, content_type="application/json")


# OFREP answers in the environment of the token (``ApiToken.environment``; production for a token bound
# to none). A request that sends ``X-Flags-Explain: 1`` (any of 1, true, yes) gets, in each answer's
# ``metadata``, why: ``explanation`` (one sentence), and when they apply ``strategy``, ``strategyIndex``,
# ``constraint`` (the first one that failed) and ``variantSource``. OFREP's metadata is flat, so the
# per-strategy steps are joined in ``explanationSteps``. A flag that is not boolean always carries
# ``metadata.enabled`` (Unleash's isEnabled: whether a strategy matched), which its value cannot say.
EXPLAIN_HEADER = "HTTP_X_FLAGS_EXPLAIN"


def _context(request: HttpRequest) -> dict[str, Any]:
    """The OFREP body's context (empty without one); PARSE_ERROR or INVALID_CONTEXT otherwise."""
    if not request.body:
        return {}
    try:
        body = load_json(request.body)
    except InvalidJson as exc:
        raise OfrepError(400, "PARSE_ERROR", str(exc)) from None
    except InvalidText as exc:
        raise OfrepError(400, "INVALID_CONTEXT", str(exc)) from None
    if not isinstance(body, dict):
        raise OfrepError(400, "PARSE_ERROR", "the body must be a JSON object")
    context = body.get("context", {})
    if context is None:
        return {}
    if not isinstance(context, dict):
        raise OfrepError(400, "INVALID_CONTEXT", "context must be an object")
    key = context.get("targetingKey")
    if key is not None:
        if not isinstance(key, str):
            raise OfrepError(400, "INVALID_CONTEXT", "context.targetingKey must be a string")
        if len(key) > MAX_TARGETING_KEY:
            raise OfrepError(400, "INVALID_CONTEXT", f"context.targetingKey is longer than {MAX_TARGETING_KEY}")
    if "currentTime" in context:
        try:
            Context.of({"currentTime": context["currentTime"]})
        except InvalidInput as exc:
            raise OfrepError(400, "INVALID_CONTEXT", f"context.currentTime: {exc.message}") from None
    return context


def _environment(request: HttpRequest, snap: Snapshot) -> str:
    return token_environment(request) or DEFAULT_FLAGS_ENVIRONMENT


def _explaining(request: HttpRequest) -> bool:
    return request.META.get(EXPLAIN_HEADER, "").strip().lower() in ("1", "true", "yes")


_KEY_MISSING = "TARGETING_KEY_MISSING"


def _outcome(flag: CompiledFlag, key: str | None) -> tuple[bool | None, str]:
    """(value, reason), or (None, TARGETING_KEY_MISSING)."""
    try:
        return evaluate(flag, key)
    except TargetingKeyMissing:
        return None, _KEY_MISSING


def _missing(name: str) -> dict[str, Any]:
    return {
        "key": name,
        "errorCode": _KEY_MISSING,
        "errorDetails": f"flag {name} depends on the user: send context.targetingKey",
    }


def _result_of(name: str, value: bool | None, reason: str) -> dict[str, Any]:
    if reason == _KEY_MISSING or value is None:  # no value is only ever for a missing key
        return _missing(name)
    return {"key": name, "value": value, "reason": reason, "variant": variant(value), "metadata": {}}


def _metadata(explanation: Explanation | None) -> dict[str, Any]:
    if explanation is None:
        return {}
    out: dict[str, Any] = {"explanation": explanation.summary}
    if explanation.strategy_index is not None:
        out["strategyIndex"] = explanation.strategy_index
    for key, value in (
        ("strategy", explanation.strategy_name),
        ("constraint", explanation.constraint),
        ("variantSource", explanation.variant_source),
    ):
        if value:
            out[key] = value
    if explanation.steps:
        out["explanationSteps"] = " | ".join(explanation.steps)
    return out


def _typed(flag: CompiledFlag, result: Result) -> dict[str, Any]:
    """An engine answer as OFREP's: the typed value (none when the flag has no value for this context:
    the SDK's default), the variant's name (on/off for a boolean without variants), the reason."""
    if result.by_chance:
        return _missing(flag.name)
    body: dict[str, Any] = {"key": flag.name}
    value = result.value if flag.type != "boolean" else result.enabled
    if value is not None:
        body["value"] = value
    body["reason"] = result.reason
    name = result.variant_name
    if name is None and flag.type == "boolean":
        name = variant(result.enabled)
    if name is not None:
        body["variant"] = name
    metadata = _metadata(result.explanation)
    if flag.type != "boolean":
        metadata["enabled"] = result.enabled  # Unleash's isEnabled: the value alone cannot say it
    body["metadata"] = metadata
    return body


def _today(flag: CompiledFlag, ctx: dict[str, Any], key: str | None) -> bool:
    """Whether today's rule answers: a simple flag, and a targeting key or no session id (without a
    key, Unleash's stickiness falls back to the session id, which only the engine reads)."""
    return not flag.custom and (key is not None or "sessionId" not in ctx)


def _answer(flag: CompiledFlag, ctx: dict[str, Any], key: str | None, lookup: Lookup, explain: bool) -> dict[str, Any]:
    if _today(flag, ctx, key) and not explain:
        return _result_of(flag.name, *_outcome(flag, key))
    return _typed(flag, answer(flag, Context.of(ctx), lookup, explain=explain))


def _key_of(ctx: dict[str, Any]) -> str | None:
    key = ctx.get("targetingKey")
    return key if isinstance(key, str) else None


# A flag's answer is one of a few documents (on or off, and why; a variant): each is serialised once
# per snapshot and environment, and the bulk answer joins them, instead of encoding every flag's object
# on every request.
_fragments: dict[tuple[Any, ...], str] = {}
_fragments_digest = ""


def _fragment(outcome: tuple[Any, ...], body: Any) -> str:
    fragment = _fragments.get(outcome)
    if fragment is None:
        fragment = _fragments[outcome] = json.dumps(body() if callable(body) else body, separators=(",", ":"))
    return fragment


def _counted(flag: CompiledFlag, body: dict[str, Any]) -> tuple[str, bool, str | None] | None:
    """(flag, on, variant) of an answer for the usage counts; None for an error (nothing evaluated)."""
    if "errorCode" in body:
        return None
    enabled = body["value"] if flag.type == "boolean" else body["metadata"]["enabled"]
    name = body.get("variant")
    return flag.name, bool(enabled), None if name in (None, "on", "off") else name


def _bulk_body(snap: Snapshot, environment: str, ctx: dict[str, Any], explain: bool) -> str:
    global _fragments_digest
    if _fragments_digest != snap.digest:
        _fragments.clear()  # flags renamed or removed leave no documents behind
        _fragments_digest = snap.digest
    key = _key_of(ctx)
    lookup = snap.lookup(environment)
    parts = []
    counts: list[tuple[str, bool, str | None]] = []
    context: Context | None = None
    for flag in snap.flags_in(environment).values():
        if explain:
            body = _answer(flag, ctx, key, lookup, True)
            parts.append(json.dumps(body, separators=(",", ":")))
            counted = _counted(flag, body)
            if counted is not None:
                counts.append(counted)
        elif _today(flag, ctx, key):
            outcome = (flag.name, *_outcome(flag, key))
            parts.append(_fragment(outcome, lambda outcome=outcome: _result_of(*outcome)))
            if outcome[1] is not None:
                counts.append((flag.name, outcome[1], None))
        else:
            if context is None:
                context = Context.of(ctx)
            result = answer(flag, context, lookup)
            if result.by_chance:
                parts.append(_fragment((environment, flag.name, _KEY_MISSING), _missing(flag.name)))
            else:
                typed = (environment, flag.name, result.enabled, result.variant_name, result.reason)
                parts.append(_fragment(typed, lambda flag=flag, result=result: _typed(flag, result)))
                counts.append((flag.name, result.enabled, result.variant_name))
    usage.count(environment, counts)
    return '{"flags":[' + ",".join(parts) + "]}"


@api_view(scope=Scope.FLAGS_READ, methods=("POST",))
def ofrep_evaluate_flag(request: HttpRequest, key: str) -> HttpResponse:
    try:
        ctx = _context(request)
    except OfrepError as error:
        return _json({"key": key, "errorCode": error.code, "errorDetails": error.details}, error.status)
    snap = current()
    environment = _environment(request, snap)
    flag = snap.flags_in(environment).get(key)
    if flag is None:
        return _json({"key": key, "errorCode": "FLAG_NOT_FOUND", "errorDetails": f"no flag named {key}"}, 404)
    result = _answer(flag, ctx, _key_of(ctx), snap.lookup(environment), _explaining(request))
    counted = _counted(flag, result)
    if counted is not None:
        usage.count(environment, (counted,))
    return _json(result, 400 if "errorCode" in result else 200)


def _etag(digest: str, environment: str, ctx: dict[str, Any], explain: bool) -> str:
    # The whole context (a custom flag may read any attribute), the environment and the explain switch.
    canonical = json.dumps([environment, explain, ctx], sort_keys=True, separators=(",", ":"))
    key_part = hashlib.blake2b(canonical.encode(), digest_size=8).hexdigest()
    return f'"{digest}-{"k" if _key_of(ctx) is not None else "n"}{key_part}"'


def _matches(if_none_match: str, etag: str) -> bool:
    candidates = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
    return etag in candidates or "*" in candidates


@api_view(scope=Scope.FLAGS_READ, methods=("POST",))
def ofrep_evaluate_flags(request: HttpRequest) -> HttpResponse:
    try:
        ctx = _context(request)
    except OfrepError as error:
        return _json({"errorCode": error.code, "errorDetails": error.details}, error.status)
    snap = current()
    environment = _environment(request, snap)
    explain = _explaining(request)
    etag = _etag(snap.digest, environment, ctx, explain)
    if_none_match = request.META.get("HTTP_IF_NONE_MATCH")
    if if_none_match and _matches(if_none_match, etag):
        response = HttpResponse(status=304)
        del response["Content-Type"]  # a 304 has no body, so no type for one
    else:
        response = HttpResponse(_bulk_body(snap, environment, ctx, explain), content_type="application/json")
    response["ETag"] = etag
    return response


# --- Operations API -------------------------------------------------------------------------------


router = Router(tags=["flags"])

_ERRORS: dict[int, Any] = {400: Error, 401: Error, 403: Error, 503: Error}
TOGGLE_FIELDS = ("enabled", "rollout_percent", "targeting_keys")


class FlagOut(Schema):
    name: str
    enabled: bool
    rollout_percent: int | None
    targeting_keys: list[str] | None
    description: str
    owner: str
    on_for: str
    modified: str | None


class FlagList(Schema):
    flags: list[FlagOut]


class ToggleOut(FlagOut):
    flag: str
    changed: bool


class ToggleIn(BaseModel):
    """The fields to set; no body flips ``enabled``. Other rules (key lengths, how many keys) are the
    flag's own and answered by the same 422."""

    # Unknown fields are refused by the rule below, in the API's own words (not pydantic's).
    model_config = ConfigDict(extra="allow")

    # Declared for the document; checked by the flag's own rules (clean_fields), so that a refusal reads
    # as it does everywhere else ("must be true or false", ...), not in pydantic's words.
    enabled: Any = Field(None, json_schema_extra={"type": "boolean"})
    rollout_percent: Any = Field(
        None, json_schema_extra={"type": "integer", "minimum": MIN_ROLLOUT_PERCENT, "maximum": MAX_ROLLOUT_PERCENT}
    )
    targeting_keys: Any = Field(None, json_schema_extra={"type": "array", "items": {"type": "string"}})

    @model_validator(mode="before")
    @classmethod
    def _known_fields(cls, data: Any) -> Any:
        return refuse_unknown_fields(data, TOGGLE_FIELDS, "unknown field; known fields: {fields}")


class UserValue(Schema):
    value: bool
    variant: str
    reason: str


class UserFlags(Schema):
    user_id: str
    flags: dict[str, UserValue]


def _flag_body(flag: Flag, segments: Any = None) -> dict[str, Any]:
    """The flag as production holds it (``rollout_percent`` and ``targeting_keys`` null when production
    has strategies beyond today's one line)."""
    compiled = compiled_of(flag, segments=segments)
    return {
        "name": flag.name,
        "enabled": flag.enabled,
        "rollout_percent": flag.rollout_percent,
        "targeting_keys": list(flag.targeting_keys) if flag.targeting_keys is not None else None,
        "description": flag.description,
        "owner": flag.owner,
        "on_for": on_for(compiled),
        "modified": flag.modified.isoformat(),
    }


@router.get(
    "/features", url_name="api-features", auth=token_auth(Scope.FLAGS_READ), response={200: FlagList, **_ERRORS}
)
def features(request: HttpRequest) -> JsonResponse:
    """Every flag with its rule and whom it is on for."""
    segments = segments_compiled()
    return JsonResponse({"flags": [_flag_body(flag, segments) for flag in flags_queryset()]})


@router.post(
    "/features/{flag}/toggle",
    url_name="api-feature-toggle",
    auth=token_auth(Scope.FLAGS_WRITE),
    response={200: ToggleOut, 404: Error, 413: Error, 422: Error, **_ERRORS},
)
def feature_toggle(request: HttpRequest, flag: str, payload: ToggleIn | None = None) -> JsonResponse:
    """No body flips ``enabled``; a body sets the fields it names (``{"enabled": true}``), so a retry
    is safe. The answer is the flag as saved, with ``changed`` saying whether this request changed it."""
    changes = payload.model_dump(exclude_unset=True) if payload is not None else {}
    clean_fields(changes, allowed=TOGGLE_FIELDS, flag=flag)
    result = flag_change(name=flag, changes=changes or None, actor=Actor.for_token(token_of(request)))
    saved = flags_queryset().get(pk=result.flag.pk)
    return JsonResponse({"flag": saved.name, "changed": result.changed, **_flag_body(saved)})


@router.get(
    "/features/{user_id}",
    url_name="api-features-for-user",
    auth=token_auth(Scope.FLAGS_READ),
    response={200: UserFlags, **_ERRORS},
)
def features_for_user(request: HttpRequest, user_id: str) -> JsonResponse:
    """Every flag's value for one user (the user id is the targeting key)."""
    if len(user_id) > MAX_TARGETING_KEY:
        raise ApiError(400, "invalid", f"user_id is longer than {MAX_TARGETING_KEY}", field="user_id")
    results = {}
    snap = current()
    lookup = snap.lookup()
    for name, flag in snap.flags.items():
        value, reason = evaluate(flag, user_id, lookup)  # with a key, evaluation always answers
        results[name] = {"value": value, "variant": variant(value), "reason": reason}
    return JsonResponse({"user_id": user_id, "flags": results})
