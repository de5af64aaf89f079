from __future__ import annotations

import hashlib
from typing import Any

from django.conf import settings
from django.db import models
from django.utils import timezone


class Scope(models.TextChoices):
    FLAGS_READ = "flags:read", "Read flags"
    FLAGS_WRITE = "flags:write", "Change flags"
    # Unleash's frontend API only (/api/frontend): it ships in a browser, so it grants nothing else.
    FLAGS_FRONTEND = "flags:frontend", "Evaluate flags for a browser (frontend API)"
    DEPLOY = "deploy", "Run deployments"
    BACKUPS = "backups", "Run and read backups"
    MONITORING_READ = "monitoring:read", "Read health and metrics"


# The scopes a server-side token may combine: all but the browser's, which stands alone.
SERVER_SCOPES = tuple(scope for scope in Scope.values if scope != Scope.FLAGS_FRONTEND)


class EnvironmentQuerySet(models.QuerySet["Environment"]):
    def ensure(self, name: str, **defaults: Any) -> Environment:
        """The environment ``name``, made at the end of the list (with ``defaults``) if missing: an app
        naming a new one, or the default one on a database emptied of it."""
        existing = self.filter(name=name).first()
        if existing is not None:
            return existing
        last = self.aggregate(last=models.Max("position"))["last"] or 0
        made, _ = self.get_or_create(name=name, defaults={"position": last + 10, **defaults})
        return made


class Environment(models.Model):
    """Where the product runs (development, staging, production...): one list, shared by the apps.

    The environment a pipeline deploys to and the one whose flag states a service reads are this same
    row; the apps point at it, the ground knows none of them. The name is how tokens, SDKs, pipelines and
    commands name it, so it is fixed once made (the admin shows it read-only on change).
    """

    name = models.SlugField(max_length=50, unique=True)
    description = models.CharField(max_length=500, blank=True)
    production = models.BooleanField(
        default=False, help_text="Changes here ask for a confirmation first (flags, deployments)."
    )
    position = models.PositiveIntegerField(default=0, help_text="Where it is listed: lowest first.")

    objects = EnvironmentQuerySet.as_manager()

    class Meta:
        ordering = ["position", "name"]

    def __str__(self) -> str:
        return self.name


# The environment a flags:read token reads when none is named: the one existing tokens always read.
DEFAULT_FLAGS_ENVIRONMENT = "production"
# The scopes whose tokens read one environment's flag states (bound to it).
FLAG_READING_SCOPES = ("flags:read", "flags:frontend")


class ApiTokenQuerySet(models.QuerySet["ApiToken"]):
    def usable(self) -> ApiTokenQuerySet:
        now = timezone.now()
        return self.filter(revoked_at__isnull=True).filter(
            models.Q(expires_at__isnull=True) | models.Q(expires_at__gt=now)
        )


class ApiToken(models.Model):
    """A bearer token for the API. Only its SHA-256 is stored; the token itself is shown once.

    Tokens are 256 random bits, so a fast unsalted hash is enough: nothing to brute-force, and a
    lookup by hash is one indexed query.
    """

    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, help_text="The token's first characters, to recognise it.")
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    scopes = models.JSONField(default=list)
    created_at = models.DateTimeField(default=timezone.now)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    expires_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    # Which environment's flag states a flags:read or flags:frontend token reads; none for the others.
    environment = models.ForeignKey(
        Environment, null=True, blank=True, on_delete=models.PROTECT, related_name="api_tokens"
    )

    objects = ApiTokenQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API token"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @staticmethod
    def hash(raw: str) -> str:
        return hashlib.sha256(raw.encode()).hexdigest()

    @property
    def is_expired(self) -> bool:
        return self.expires_at is not None and self.expires_at <= timezone.now()

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes


class ActorType(models.TextChoices):
    USER = "user", "User"
    TOKEN = "token", "API token"
    SYSTEM = "system", "System"


class AuditEvent(models.Model):
    """One change made by an operator, a token or the system: who, when, what, before and after."""

    time = models.DateTimeField(default=timezone.now, db_index=True)  # serves the newest-first listing
    actor_type = models.CharField(max_length=10, choices=ActorType.choices)
    actor_user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    actor_token = models.ForeignKey(ApiToken, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    actor_label = models.CharField(max_length=150, help_text="Who, as named when it happened.")
    action = models.CharField(max_length=100)
    object_type = models.CharField(max_length=100, blank=True)
    object_id = models.CharField(max_length=100, blank=True)
    object_label = models.CharField(max_length=200, blank=True)
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)
    request_id = models.CharField(max_length=128, blank=True)

    class Meta:
        ordering = ["-time", "-id"]
        indexes = [
            # An object's history ("every change to flag X"), newest first.
            models.Index(fields=["object_type", "object_id", "-time"], name="audit_object_time"),
        ]

    def __str__(self) -> str:
        return f"{self.time:%Y-%m-%d %H:%M:%S} {self.actor_label} {self.action} {self.object_label}".strip()
