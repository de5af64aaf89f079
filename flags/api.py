"""OFREP (OpenFeature Remote Evaluation Protocol) and the flags part of the operations API."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from ninja import Field, Router, Schema
from pydantic import BaseModel, ConfigDict, model_validator
from pydantic_core import PydanticCustomError

from controlplane.api import ApiError, InvalidJson, InvalidText, api_view, load_json
from controlplane.audit import Actor
from controlplane.models import Scope
from controlplane.openapi import Error, token_auth, token_of
from flags.evaluation import CompiledFlag, TargetingKeyMissing, evaluate, on_for, variant
from flags.models import Flag
from flags.services import MAX_ROLLOUT_PERCENT, MAX_TARGETING_KEY, MIN_ROLLOUT_PERCENT, clean_fields, flag_change
from flags.snapshot import Snapshot, current

# --- OFREP ----------------------------------------------------------------------------------------


class OfrepError(Exception):
    def __init__(self, status: int, code: str, details: str) -> None:
        super().__init__(details)
        self.status, self.code, self.details = status, code, details


def _json(body: Any, status: int = 200) -> HttpResponse:
    return HttpResponse(json.dumps(body, separators=(",", ":")), status=status, content_type="application/json")


def _targeting_key(request: HttpRequest) -> str | None:
    """The context's targetingKey from an OFREP body; PARSE_ERROR or INVALID_CONTEXT otherwise."""
    if not request.body:
        return None
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
        return None
    if not isinstance(context, dict):
        raise OfrepError(400, "INVALID_CONTEXT", "context must be an object")
    key = context.get("targetingKey")
    if key is None:
        return None
    if not isinstance(key, str):
        raise OfrepError(400, "INVALID_CONTEXT", "context.targetingKey must be a string")
    if len(key) > MAX_TARGETING_KEY:
        raise OfrepError(400, "INVALID_CONTEXT", f"context.targetingKey is longer than {MAX_TARGETING_KEY}")
    return key


_KEY_MISSING = "TARGETING_KEY_MISSING"


def _outcome(flag: CompiledFlag, key: str | None) -> tuple[bool | None, str]:
    """(value, reason), or (None, TARGETING_KEY_MISSING)."""
    try:
        return evaluate(flag, key)
    except TargetingKeyMissing:
        return None, _KEY_MISSING


def _result_of(name: str, value: bool | None, reason: str) -> dict[str, Any]:
    if reason == _KEY_MISSING or value is None:  # no value is only ever for a missing key
        return {
            "key": name,
            "errorCode": _KEY_MISSING,
            "errorDetails": f"flag {name} depends on the user: send context.targetingKey",
        }
    return {"key": name, "value": value, "reason": reason, "variant": variant(value), "metadata": {}}


def _result(flag: CompiledFlag, key: str | None) -> dict[str, Any]:
    return _result_of(flag.name, *_outcome(flag, key))


# A flag's answer is one of a few documents (on or off, and why): each is serialised once and the bulk
# answer joins them, instead of encoding every flag's object on every request.
_fragments: dict[tuple[str, bool | None, str], str] = {}
_fragments_digest = ""


def _bulk_body(snap: Snapshot, key: str | None) -> str:
    global _fragments_digest
    if _fragments_digest != snap.digest:
        _fragments.clear()  # flags renamed or removed leave no documents behind
        _fragments_digest = snap.digest
    parts = []
    for flag in snap.flags.values():
        outcome = (flag.name, *_outcome(flag, key))
        fragment = _fragments.get(outcome)
        if fragment is None:
            fragment = _fragments[outcome] = json.dumps(_result_of(*outcome), separators=(",", ":"))
        parts.append(fragment)
    return '{"flags":[' + ",".join(parts) + "]}"


@api_view(scope=Scope.FLAGS_READ, methods=("POST",))
def ofrep_evaluate_flag(request: HttpRequest, key: str) -> HttpResponse:
    try:
        targeting_key = _targeting_key(request)
    except OfrepError as error:
        return _json({"key": key, "errorCode": error.code, "errorDetails": error.details}, error.status)
    flag = current().flags.get(key)
    if flag is None:
        return _json({"key": key, "errorCode": "FLAG_NOT_FOUND", "errorDetails": f"no flag named {key}"}, 404)
    result = _result(flag, targeting_key)
    return _json(result, 400 if "errorCode" in result else 200)


def _etag(digest: str, targeting_key: str | None) -> str:
    key_part = hashlib.blake2b((targeting_key or "").encode(), digest_size=8).hexdigest()
    return f'"{digest}-{"k" if targeting_key is not None else "n"}{key_part}"'


def _matches(if_none_match: str, etag: str) -> bool:
    candidates = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
    return etag in candidates or "*" in candidates


@api_view(scope=Scope.FLAGS_READ, methods=("POST",))
def ofrep_evaluate_flags(request: HttpRequest) -> HttpResponse:
    try:
        targeting_key = _targeting_key(request)
    except OfrepError as error:
        return _json({"errorCode": error.code, "errorDetails": error.details}, error.status)
    snap = current()
    etag = _etag(snap.digest, targeting_key)
    if_none_match = request.META.get("HTTP_IF_NONE_MATCH")
    if if_none_match and _matches(if_none_match, etag):
        response = HttpResponse(status=304)
        del response["Content-Type"]  # a 304 has no body, so no type for one
    else:
        response = HttpResponse(_bulk_body(snap, targeting_key), content_type="application/json")
    response["ETag"] = etag
    return response


# --- Operations API -------------------------------------------------------------------------------


router = Router(tags=["flags"])

_ERRORS: dict[int, Any] = {400: Error, 401: Error, 403: Error, 503: Error}
TOGGLE_FIELDS = ("enabled", "rollout_percent", "targeting_keys")


class FlagOut(Schema):
    name: str
    enabled: bool
    rollout_percent: int
    targeting_keys: list[str]
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
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(TOGGLE_FIELDS))
            if unknown:
                raise PydanticCustomError(
                    "unknown_field",
                    "unknown field; known fields: {fields}",
                    {"field": unknown[0], "fields": ", ".join(TOGGLE_FIELDS)},
                )
        return data


class UserValue(Schema):
    value: bool
    variant: str
    reason: str


class UserFlags(Schema):
    user_id: str
    flags: dict[str, UserValue]


def _flag_body(flag: Flag) -> dict[str, Any]:
    compiled = CompiledFlag.of(flag)
    return {
        "name": flag.name,
        "enabled": flag.enabled,
        "rollout_percent": flag.rollout_percent,
        "targeting_keys": list(flag.targeting_keys),
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
    return JsonResponse({"flags": [_flag_body(flag) for flag in Flag.objects.order_by("name")]})


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
    return JsonResponse({"flag": result.flag.name, "changed": result.changed, **_flag_body(result.flag)})


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
    for name, flag in current().flags.items():
        value, reason = evaluate(flag, user_id)  # with a key, evaluation always answers
        results[name] = {"value": value, "variant": variant(value), "reason": reason}
    return JsonResponse({"user_id": user_id, "flags": results})
