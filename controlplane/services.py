"""Writes of the controlplane app: API tokens. Each validates, writes atomically and audits."""

from __future__ import annotations

import logging
import secrets
import time
from datetime import timedelta

from django.db import DatabaseError, models, transaction
from django.utils import timezone

from controlplane.audit import Actor, audit_record, snapshot
from controlplane.errors import InvalidInput
from controlplane.localcopy import LocalCopy
from controlplane.models import DEFAULT_FLAGS_ENVIRONMENT, FLAG_READING_SCOPES, ApiToken, Environment, Scope

logger = logging.getLogger(__name__)
TOKEN_PREFIX = "cpt_"  # noqa: S105 - a marker that lets redaction spot tokens, not a secret
# Recording every use would make each API call a write; a minute's precision is what operators need.
LAST_USED_PRECISION = timedelta(minutes=1)
TOKEN_AUDIT_FIELDS = ["name", "prefix", "scopes", "environment", "expires_at", "revoked_at"]
# The rules of a token request, declared once: the service, the admin form, the command and the API schemas.
MAX_TOKEN_NAME_LENGTH = 100
MIN_EXPIRES_IN_DAYS = 1
MAX_EXPIRES_IN_DAYS = 3650


def _load_tokens() -> dict[str, ApiToken]:
    # In a fixed order, so that the same rows give the same copy on disk (written only when it differs).
    # With its environment: a flags:read request knows which environment it reads without a query.
    usable = ApiToken.objects.filter(revoked_at__isnull=True).select_related("environment").order_by("pk")
    return {token.token_hash: token for token in usable}


# Every API request checks its token here, without a query; a revocation reaches every process
# within CONTROLPLANE_RELOAD_INTERVAL.
usable_tokens: LocalCopy[dict[str, ApiToken]] = LocalCopy("api-tokens", _load_tokens)
_last_used_written: dict[int, float] = {}
_last_used_failed_at = float("-inf")


class InvalidTokenRequest(InvalidInput):
    """A token cannot be made as asked; ``field`` names the part that is wrong (422)."""


def parse_scopes(raw: str | list[str]) -> list[str]:
    """Scopes from ``flags:read,deploy`` or a list; unknown or missing scopes are an error."""
    items = raw.split(",") if isinstance(raw, str) else list(raw)
    scopes = sorted({item.strip() for item in items if item.strip()})
    if not scopes:
        raise InvalidTokenRequest("scopes", f"name at least one of {', '.join(Scope.values)}")
    unknown = [scope for scope in scopes if scope not in Scope.values]
    if unknown:
        raise InvalidTokenRequest(
            "scopes", f"unknown scope {', '.join(unknown)}; known scopes: {', '.join(Scope.values)}"
        )
    if Scope.FLAGS_FRONTEND in scopes and len(scopes) > 1:
        # Its token is in every visitor's browser: with another scope beside it, anyone could use that one.
        raise InvalidTokenRequest("scopes", "a flags:frontend token ships in a browser: give it no other scope")
    return scopes


def clean_token_name(name: str) -> str:
    """The name, stripped; 1 to MAX_TOKEN_NAME_LENGTH characters."""
    name = name.strip()
    if not name or len(name) > MAX_TOKEN_NAME_LENGTH:
        raise InvalidTokenRequest("name", f"give a name of 1 to {MAX_TOKEN_NAME_LENGTH} characters")
    return name


def clean_expires_in_days(days: int | None) -> int | None:
    """Days until the token expires, or None for a token that does not."""
    if days is not None and not MIN_EXPIRES_IN_DAYS <= days <= MAX_EXPIRES_IN_DAYS:
        raise InvalidTokenRequest("expires_in_days", f"must be between {MIN_EXPIRES_IN_DAYS} and {MAX_EXPIRES_IN_DAYS}")
    return days


def clean_token_environment(scopes: list[str], environment: Environment | str | None) -> Environment | None:
    """The environment a token with ``scopes`` reads flags in: the one named (production if none) for a
    flags:read or flags:frontend token; none for the others, which read no flag states (naming one is an
    error)."""
    if not any(scope in scopes for scope in FLAG_READING_SCOPES):
        if environment not in (None, ""):
            raise InvalidTokenRequest(
                "environment", "only a flags:read or flags:frontend token is bound to an environment"
            )
        return None
    if isinstance(environment, Environment):
        return environment
    if not environment:  # the one existing tokens read; made again if a database lost it
        return Environment.objects.ensure(DEFAULT_FLAGS_ENVIRONMENT, production=True)
    name = environment
    found = Environment.objects.filter(name=name).first()
    if found is None:
        known = ", ".join(Environment.objects.values_list("name", flat=True)) or "none"
        raise InvalidTokenRequest("environment", f"no environment named {name!r} (environments: {known})")
    return found


def api_token_create(
    *,
    name: str,
    scopes: str | list[str],
    expires_in_days: int | None = None,
    environment: Environment | str | None = None,
    actor: Actor,
) -> tuple[ApiToken, str]:
    """Make a token. Returns the row and the token itself, which is never stored and shown once.

    A flags:read token is bound to one environment (``environment``, production if not given): the flag
    states it reads are that environment's."""
    name = clean_token_name(name)
    parsed = parse_scopes(scopes)
    expires_in_days = clean_expires_in_days(expires_in_days)
    bound = clean_token_environment(parsed, environment)
    raw = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with transaction.atomic():
        token = ApiToken.objects.create(
            name=name,
            prefix=raw[:12],
            token_hash=ApiToken.hash(raw),
            scopes=parsed,
            environment=bound,
            created_by=actor.user if actor.user is not None and actor.user.pk else None,
            expires_at=timezone.now() + timedelta(days=expires_in_days) if expires_in_days else None,
        )
        audit_record(actor=actor, action="api_token.create", obj=token, after=snapshot(token, TOKEN_AUDIT_FIELDS))
        usable_tokens.bump()
    return token, raw


def api_token_revoke(*, token: ApiToken, actor: Actor) -> ApiToken:
    """Revoke a token at once; revoking twice changes nothing."""
    with transaction.atomic(durable=True):
        token = ApiToken.objects.select_for_update().get(pk=token.pk)
        if token.revoked_at is not None:
            return token
        before = snapshot(token, TOKEN_AUDIT_FIELDS)
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])
        audit_record(
            actor=actor, action="api_token.revoke", obj=token, before=before, after=snapshot(token, TOKEN_AUDIT_FIELDS)
        )
        usable_tokens.bump()
    return token


def api_token_authenticate(raw: str) -> ApiToken | None:
    """The usable token with this value, or None. No query, except to record use once a minute."""
    if not raw.startswith(TOKEN_PREFIX) or len(raw) > 100:
        return None
    token = usable_tokens.get().get(ApiToken.hash(raw))
    if token is None or token.is_expired:
        return None
    _mark_used(token)
    return token


def _mark_used(token: ApiToken) -> None:
    global _last_used_failed_at
    now = time.monotonic()
    if now - _last_used_written.get(token.pk, float("-inf")) < LAST_USED_PRECISION.total_seconds():
        return
    _last_used_written[token.pk] = now
    cutoff = timezone.now() - LAST_USED_PRECISION
    try:
        # In a savepoint when the caller has a transaction open, so that a failure here leaves it usable.
        # Conditional: several processes write at most once a minute between them.
        with transaction.atomic():
            ApiToken.objects.filter(pk=token.pk).filter(
                models.Q(last_used_at__isnull=True) | models.Q(last_used_at__lt=cutoff)
            ).update(last_used_at=timezone.now())
    except DatabaseError as exc:  # a bookkeeping write: the request it rides on goes on without it
        if now - _last_used_failed_at >= LAST_USED_PRECISION.total_seconds():
            _last_used_failed_at = now
            logger.warning("could not record the use of API token %s: %s", token.pk, exc)
