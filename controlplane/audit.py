"""The one helper every service calls to record a change: ``audit_record``."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.forms.models import model_to_dict

from controlplane.context import current_request_id
from controlplane.models import ActorType, ApiToken, AuditEvent
from controlplane.redaction import redact

if TYPE_CHECKING:
    from django.contrib.auth.models import AnonymousUser, User


@dataclass(frozen=True)
class Actor:
    """Who makes a change: a logged-in user, an API token, or the control plane itself."""

    type: str
    label: str
    user: User | None = None
    token: ApiToken | None = None

    @classmethod
    def for_user(cls, user: User | AnonymousUser) -> Actor:
        """The person behind ``request.user``; one not logged in is nobody's change (a system actor)."""
        if not user.is_authenticated:
            return cls.system("anonymous")
        return cls(ActorType.USER, user.get_username(), user=user)

    @classmethod
    def for_token(cls, token: ApiToken) -> Actor:
        return cls(ActorType.TOKEN, f"token:{token.name} ({token.prefix})", token=token)

    @classmethod
    def system(cls, label: str = "system") -> Actor:
        return cls(ActorType.SYSTEM, label)


def snapshot(instance: models.Model, fields: list[str] | None = None, exclude: list[str] | None = None) -> dict:
    """A JSON-ready dict of a model's field values, for before/after."""
    data = model_to_dict(instance, fields=fields, exclude=exclude)
    for field in instance._meta.many_to_many:
        if field.name in data:
            data[field.name] = sorted(getattr(obj, "pk", obj) for obj in data[field.name])
    return json.loads(json.dumps(data, cls=DjangoJSONEncoder))


def _jsonable(value: Any) -> Any:
    if value is None:
        return None
    return redact(json.loads(json.dumps(value, cls=DjangoJSONEncoder)))


def audit_record(
    *,
    actor: Actor,
    action: str,
    obj: models.Model | None = None,
    object_type: str = "",
    object_id: str = "",
    object_label: str = "",
    before: Any = None,
    after: Any = None,
) -> AuditEvent:
    """Record one change. Secrets in before/after are redacted by key name and by value.

    Call it inside the service's transaction, so the change and its record commit together.
    """
    if obj is not None:
        object_type = object_type or obj._meta.label_lower
        object_id = object_id or str(obj.pk)
        object_label = object_label or str(obj)
    return AuditEvent.objects.create(
        actor_type=actor.type,
        actor_user=actor.user if actor.user is not None and actor.user.pk else None,
        actor_token=actor.token,
        actor_label=actor.label[:150],
        action=action[:100],
        object_type=object_type[:100],
        object_id=object_id[:100],
        object_label=object_label[:200],
        before=_jsonable(before),
        after=_jsonable(after),
        request_id=current_request_id(),
    )


# --- In words -------------------------------------------------------------------------------------

MAX_SHOWN_VALUE = 60  # a long text (a description, a runbook) is named as changed, not printed


def describe_change(before: Any, after: Any, action: str = "") -> str:
    """What an event's before and after say, in words: "rollout 10 % → 25 %", "turned on",
    "targeting keys: added vip; removed bob". Pages and admin show this instead of the two dicts.

    The snapshots are the dicts ``audit_record`` stored (already redacted); a field missing on one
    side counts as unknown there, not as a change. An event with one side is a create or a delete
    (named by its ``action``: "flag.create") or a record of facts ("auth.login": its address).
    """
    if not isinstance(before, dict) and not isinstance(after, dict):
        return ""
    if not isinstance(before, dict) or not isinstance(after, dict):
        state = after if isinstance(after, dict) else before
        if action.endswith((".create", ".delete")):
            return ("created" if action.endswith(".create") else "deleted") + _summary(state)
        return "; ".join(f"{_label(key)} {_short(value)}" for key, value in state.items())
    parts = [
        _describe_field(key, before[key], after[key])
        for key in sorted(set(before) & set(after), key=_field_order)
        if before[key] != after[key]
    ]
    return "; ".join(parts) or "no change"


def _field_order(key: str) -> tuple[int, str]:
    # The switch first, then the rollout, then the rest by name: the order an operator reads a flag in.
    return ({"enabled": 0, "active": 0, "rollout_percent": 1}.get(key, 2), key)


def _label(key: str) -> str:
    return key.removesuffix("_percent").replace("_", " ")


def _describe_field(key: str, old: Any, new: Any) -> str:
    if key in ("enabled", "active") and isinstance(new, bool):
        return "turned on" if new else "turned off"
    if isinstance(old, list) and isinstance(new, list):
        added = [str(item) for item in new if item not in old]
        removed = [str(item) for item in old if item not in new]
        words = [f"{verb} {', '.join(items)}" for verb, items in (("added", added), ("removed", removed)) if items]
        return f"{_label(key)}: {'; '.join(words) or 'reordered'}"
    if isinstance(old, bool) or isinstance(new, bool):
        return f"{_label(key)} {_value(old)} → {_value(new)}"
    if _is_long(old) or _is_long(new):
        return f"{_label(key)} changed"
    unit = " %" if key.endswith("_percent") else ""
    return f"{_label(key)} {_value(old)}{unit} → {_value(new)}{unit}"


def _summary(state: Any) -> str:
    """The few fields that say what a created or deleted flag was: on or off and its rollout."""
    if not isinstance(state, dict):
        return ""
    words = []
    if isinstance(state.get("enabled"), bool):
        words.append("on" if state["enabled"] else "off")
    if isinstance(state.get("rollout_percent"), int):
        words.append(f"rollout {state['rollout_percent']} %")
    return f" ({', '.join(words)})" if words else ""


def _short(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return f"({len(value)} item{'s' if len(value) != 1 else ''})"
    text = _value(value)
    return text if len(text) <= MAX_SHOWN_VALUE else text[:MAX_SHOWN_VALUE] + "…"


def _is_long(value: Any) -> bool:
    return isinstance(value, (dict, list)) or (isinstance(value, str) and len(value) > MAX_SHOWN_VALUE)


def _value(value: Any) -> str:
    if value is None or value == "":
        return "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)
