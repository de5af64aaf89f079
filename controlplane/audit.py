"""The one helper every service calls to record a change: ``audit_record``."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db import models
from django.forms.models import model_to_dict

from controlplane.context import current_request_id
from controlplane.models import ActorType, AuditEvent
from controlplane.redaction import redact

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser
    from django.http import HttpRequest

    from controlplane.models import ApiToken


@dataclass(frozen=True)
class Actor:
    """Who makes a change: a logged-in user, an API token, or the control plane itself."""

    type: str
    label: str
    user: AbstractBaseUser | None = None
    token: ApiToken | None = None

    @classmethod
    def for_user(cls, user: AbstractBaseUser) -> Actor:
        return cls(ActorType.USER, user.get_username(), user=user)

    @classmethod
    def for_token(cls, token: ApiToken) -> Actor:
        return cls(ActorType.TOKEN, f"token:{token.name} ({token.prefix})", token=token)

    @classmethod
    def system(cls, label: str = "system") -> Actor:
        return cls(ActorType.SYSTEM, label)

    @classmethod
    def from_request(cls, request: HttpRequest) -> Actor:
        token = getattr(request, "api_token", None)
        if token is not None:
            return cls.for_token(token)
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            return cls.for_user(user)
        return cls.system("anonymous")


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
