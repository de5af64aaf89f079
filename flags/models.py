from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, ClassVar

from django.core.validators import MaxValueValidator
from django.db import models
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone
from waffle.managers import FlagManager as WaffleFlagManager
from waffle.models import AbstractUserFlag

from controlplane.models import DEFAULT_FLAGS_ENVIRONMENT, Environment

logger = logging.getLogger(__name__)


def flush_logged(flush: Callable[[Any], None]) -> Callable[[Any], None]:
    """waffle's ``flush`` (clearing its cache keys), made to log a cache fault instead of raising it.

    waffle calls ``flush`` from ``transaction.on_commit`` after ``save()``/``delete()`` and from its
    m2m signal: by then the change is committed, so an exception there (a Redis that refuses) would
    only turn a saved change into a 500, and a retried toggle would flip the flag back.
    """

    def guarded(self: Any) -> None:
        try:
            flush(self)
        # Any cache client error. Flag.get reads the in-process snapshot, not these keys; waffle's own
        # entries (switches, samples) expire with the cache's default timeout.
        except Exception as exc:
            logger.error("waffle's cache for %s %s not cleared (the change is saved): %s", self._meta.label, self, exc)

    guarded.logs_faults = True  # type: ignore[attr-defined]
    return guarded


class FlagManager(WaffleFlagManager):
    def create(self, **kwargs: Any) -> Flag:
        # waffle's create clears its all-flags key at once, inside the transaction, where a cache fault
        # would roll the new flag back; save() clears the same key after commit (the logged flush).
        return self.get_queryset().create(**kwargs)


# The snapshot the instances Flag.get gave out were made from, and those instances by name.
_instances: tuple[Any, dict[str, Any]] = (None, {})


class FlagType(models.TextChoices):
    BOOLEAN = "boolean", "Boolean"
    STRING = "string", "String"
    NUMBER = "number", "Number"
    OBJECT = "object", "Object (JSON)"


class Flag(AbstractUserFlag):
    """A feature flag: a type, and a state per environment (``FlagState``: enabled, strategies, variants).

    Chosen as waffle's flag model (``WAFFLE_FLAG_MODEL``) from the first migration, because waffle
    cannot swap its flag model once tables exist. Today's one-line fields (``enabled``,
    ``rollout_percent``, ``targeting_keys``) are no longer columns: they are read from the production
    state's simple strategies (``FlagState.simple``), and written through ``flags.services``.
    """

    type = models.CharField(max_length=10, choices=FlagType.choices, default=FlagType.BOOLEAN)
    default_value = models.JSONField(
        null=True, blank=True, help_text="A non-boolean flag's value when it is off or no variant applies."
    )
    description = models.TextField(blank=True)
    owner = models.CharField(max_length=100, blank=True)

    objects: ClassVar[FlagManager] = FlagManager()

    class Meta(AbstractUserFlag.Meta):
        pass

    def get_absolute_url(self) -> str:
        return reverse("flags:detail", args=[self.name])

    flush = flush_logged(AbstractUserFlag.flush)

    @classmethod
    def get(cls, name: str) -> Flag:
        """waffle's lookup (``flag_is_active``, the ``{% flag %}`` tag, ``waffle_flag``): read from the
        in-process snapshot, so those entry points make no query and no cache read once warm, and keep
        answering from the last snapshot when the shared cache is down. A name the snapshot does not
        hold gives an unsaved flag, which is off. Instances are made once per snapshot."""
        from flags.snapshot import current

        global _instances
        snap = current()
        made_from, made = _instances  # one tuple, read once: never another snapshot's dict
        if made_from is not snap:
            made = {}
            _instances = (snap, made)
        flag = made.get(name)
        if flag is None:
            compiled = snap.flags.get(name)
            if compiled is None:
                return cls(name=name)
            info = snap.info[name]
            flag = made[name] = cls(name=name, type=info.type, description=info.description, owner=info.owner)
        return flag

    def is_active(self, request: HttpRequest, read_only: bool = False) -> bool:
        """waffle's entry point (flag_is_active, template tags, decorators): the control plane's
        rule on the snapshot's copy of the flag, keyed by the logged-in user's id instead of waffle's
        random per-request cookie. A flag the snapshot does not hold is off."""
        from flags.evaluation import TargetingKeyMissing, evaluate
        from flags.snapshot import current

        snap = current()
        compiled = snap.flags.get(self.name)
        if compiled is None:
            return False
        user: Any = getattr(request, "user", None)
        key = str(user.pk) if user is not None and user.is_authenticated else None
        try:
            return evaluate(compiled, key, snap.lookup())[0]
        except TargetingKeyMissing:
            return False

    # Today's one-line fields, as the production state holds them (one query unless prefetched:
    # ``Flag.objects.with_states()``). None for rollout and keys when production has other strategies.
    def state(self, environment: str | None = None) -> FlagState | None:
        name = environment or DEFAULT_FLAGS_ENVIRONMENT
        for state in self.states.all():
            if state.environment.name == name:
                return state
        return None

    def _line(self) -> tuple[bool, int | None, list[str] | None]:
        """(enabled, rollout, keys) of production: stored, or for waffle's unsaved instances (Flag.get)
        the snapshot's."""
        if self.pk is None:
            from flags.snapshot import current

            compiled = current().flags.get(self.name)
            if compiled is None:
                return False, None, None
            if compiled.custom:
                return compiled.enabled, None, None
            return compiled.enabled, compiled.rollout_percent, sorted(compiled.targeting_keys)
        state = self.state()
        if state is None:
            return False, None, None
        simple = state.simple()
        return state.enabled, simple[0] if simple else None, simple[1] if simple else None

    @property
    def enabled(self) -> bool:
        return self._line()[0]

    @property
    def rollout_percent(self) -> int | None:
        return self._line()[1]

    @property
    def targeting_keys(self) -> list[str] | None:
        return self._line()[2]


class FlagState(models.Model):
    """A flag in one environment: on or off, its ordered strategies and its variants."""

    flag = models.ForeignKey(Flag, on_delete=models.CASCADE, related_name="states")
    environment = models.ForeignKey(Environment, on_delete=models.PROTECT, related_name="+")
    enabled = models.BooleanField(default=False, help_text="Off means off for everyone in this environment.")
    modified = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["flag__name", "environment__position", "environment__name"]
        constraints = [
            # One state per flag and environment; also serves the lookup of a flag's state by environment.
            models.UniqueConstraint(fields=["flag", "environment"], name="flag_state_one_per_environment"),
        ]
        verbose_name = "flag state"

    def __str__(self) -> str:
        return f"{self.flag.name} in {self.environment.name}"

    def get_absolute_url(self) -> str:
        return reverse("flags:detail", args=[self.flag.name])

    def simple(self) -> tuple[int, list[str]] | None:
        """(rollout percent, targeting keys) when the strategies are today's simple ones (named users,
        then one rollout by the targeting key with the flag name as group), else None."""
        strategies = list(self.strategies.all())
        keys: list[str] = []
        if strategies and strategies[0].kind == StrategyKind.USER_WITH_ID and len(strategies) == 2:
            keys = sorted(strategies[0].user_ids)
            if not strategies[0].is_plain() or not keys:
                return None
            strategies = strategies[1:]
        if len(strategies) != 1 or self.variants.all():
            return None
        rollout = strategies[0]
        if rollout.kind != StrategyKind.FLEXIBLE_ROLLOUT or not rollout.is_plain():
            return None
        if rollout.stickiness not in ("", "default") or rollout.group_id not in ("", self.flag.name):
            return None
        return rollout.rollout or 0, keys


class StrategyKind(models.TextChoices):
    """Unleash's strategy names, as its SDKs evaluate them."""

    DEFAULT = "default", "Everyone (default)"
    USER_WITH_ID = "userWithId", "Named user ids"
    FLEXIBLE_ROLLOUT = "flexibleRollout", "Rollout (flexible)"
    GRADUAL_USER_ID = "gradualRolloutUserId", "Rollout by user id (legacy)"
    GRADUAL_SESSION_ID = "gradualRolloutSessionId", "Rollout by session id (legacy)"
    GRADUAL_RANDOM = "gradualRolloutRandom", "Random rollout (legacy)"
    REMOTE_ADDRESS = "remoteAddress", "Remote address"
    APPLICATION_HOSTNAME = "applicationHostname", "Application host name"


class Segment(models.Model):
    """A named, reusable set of constraints ("premium users in the EU") that strategies refer to."""

    name = models.CharField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    modified = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Strategy(models.Model):
    """One way a flag state turns on (Unleash's activation strategy); the state is on when any matches."""

    state = models.ForeignKey(FlagState, on_delete=models.CASCADE, related_name="strategies")
    position = models.PositiveIntegerField(default=0)
    kind = models.CharField(max_length=40, choices=StrategyKind.choices, default=StrategyKind.FLEXIBLE_ROLLOUT)
    title = models.CharField(max_length=200, blank=True)
    rollout = models.PositiveSmallIntegerField(
        null=True, blank=True, validators=[MaxValueValidator(100)], help_text="Percent, for the rollout kinds."
    )
    stickiness = models.CharField(
        max_length=100, blank=True, default="default", help_text="default (the targeting key) or a context field."
    )
    group_id = models.CharField(max_length=200, blank=True, help_text="Blank: the flag's name.")
    user_ids = models.JSONField(default=list, blank=True)
    # Unleash's other parameters (IPs, hostNames), as strings.
    parameters = models.JSONField(default=dict, blank=True)
    segments = models.ManyToManyField(Segment, blank=True, related_name="strategies")
    # Segment ids an imported Unleash document referred to without defining: the strategy never matches.
    missing_segments = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["state", "position", "pk"]
        verbose_name_plural = "strategies"

    def __str__(self) -> str:
        return f"{self.get_kind_display()} #{self.position}"

    def is_plain(self) -> bool:
        """No constraints, segments, variants, title or extra parameters."""
        return not (
            self.title
            or self.parameters
            or self.missing_segments
            or self.constraints.all()
            or self.segments.all()
            or self.variants.all()
        )


class ConstraintOperator(models.TextChoices):
    IN = "IN", "in"
    NOT_IN = "NOT_IN", "not in"
    STR_STARTS_WITH = "STR_STARTS_WITH", "starts with"
    STR_ENDS_WITH = "STR_ENDS_WITH", "ends with"
    STR_CONTAINS = "STR_CONTAINS", "contains"
    NUM_EQ = "NUM_EQ", "number ="
    NUM_GT = "NUM_GT", "number >"
    NUM_GTE = "NUM_GTE", "number ≥"
    NUM_LT = "NUM_LT", "number <"
    NUM_LTE = "NUM_LTE", "number ≤"
    SEMVER_EQ = "SEMVER_EQ", "semver ="
    SEMVER_GT = "SEMVER_GT", "semver >"
    SEMVER_GTE = "SEMVER_GTE", "semver ≥"
    SEMVER_LT = "SEMVER_LT", "semver <"
    SEMVER_LTE = "SEMVER_LTE", "semver ≤"
    DATE_AFTER = "DATE_AFTER", "date after"
    DATE_BEFORE = "DATE_BEFORE", "date before"
    REGEX = "REGEX", "regex"
    IN_CIDR = "IN_CIDR", "in CIDR"


class Constraint(models.Model):
    """A condition on a context field, of a strategy or of a segment (exactly one)."""

    strategy = models.ForeignKey(Strategy, null=True, blank=True, on_delete=models.CASCADE, related_name="constraints")
    segment = models.ForeignKey(Segment, null=True, blank=True, on_delete=models.CASCADE, related_name="constraints")
    position = models.PositiveIntegerField(default=0)
    field = models.CharField(max_length=100, help_text="targetingKey, currentTime or any context attribute.")
    operator = models.CharField(max_length=20, choices=ConstraintOperator.choices)
    values = models.JSONField(default=list, blank=True)
    case_insensitive = models.BooleanField(default=False)
    inverted = models.BooleanField(default=False)

    class Meta:
        ordering = ["position", "pk"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(strategy__isnull=False, segment__isnull=True)
                | models.Q(strategy__isnull=True, segment__isnull=False),
                name="constraint_of_strategy_or_segment",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.field} {self.operator} {', '.join(map(str, self.values))}"


class Variant(models.Model):
    """A named value of the flag's type with a weight: of a state (flag-level) or of a strategy."""

    state = models.ForeignKey(FlagState, null=True, blank=True, on_delete=models.CASCADE, related_name="variants")
    strategy = models.ForeignKey(Strategy, null=True, blank=True, on_delete=models.CASCADE, related_name="variants")
    position = models.PositiveIntegerField(default=0)
    name = models.CharField(max_length=100)
    value = models.JSONField(null=True, blank=True)
    weight = models.PositiveIntegerField(default=1000)
    stickiness = models.CharField(max_length=100, blank=True, default="default")
    # Unleash's payload type when imported from it (string, json, csv, number); blank: from the flag's type.
    payload_type = models.CharField(max_length=20, blank=True)
    # [{"field": ..., "values": [...]}]: a context value that picks this variant whatever the hash.
    overrides = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["position", "pk"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(state__isnull=False, strategy__isnull=True)
                | models.Q(state__isnull=True, strategy__isnull=False),
                name="variant_of_state_or_strategy",
            ),
        ]

    def __str__(self) -> str:
        return self.name


class Dependency(models.Model):
    """The flag is on only when its parent is on (or off), optionally with one of the parent's variants."""

    flag = models.ForeignKey(Flag, on_delete=models.CASCADE, related_name="dependencies")
    parent = models.CharField(max_length=200, help_text="The parent flag's name.")
    enabled = models.BooleanField(default=True, help_text="Needs the parent on (checked) or off.")
    variants = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["pk"]
        verbose_name_plural = "dependencies"

    def __str__(self) -> str:
        return f"{self.flag.name} needs {self.parent}"


class ScheduledChangeKind(models.TextChoices):
    ENABLE = "enable", "Turn on"
    DISABLE = "disable", "Turn off"
    ROLLOUT = "rollout", "Set the rollout"
    STATE = "state", "Replace the state (strategies, variants)"


class ScheduledChangeStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    APPLIED = "applied", "Applied"
    SKIPPED = "skipped", "Skipped"
    CANCELLED = "cancelled", "Cancelled"


class ScheduledChange(models.Model):
    """A change to a flag's state in one environment, made at ``at`` by beat on behalf of ``created_by``.

    ``base`` is the state (its full document) when the change was scheduled: what the staleness rule
    (``flags.schedules``) compares with when the time comes.
    """

    flag = models.ForeignKey(Flag, on_delete=models.CASCADE, related_name="scheduled_changes")
    environment = models.ForeignKey(Environment, on_delete=models.CASCADE, related_name="+")
    at = models.DateTimeField()
    kind = models.CharField(max_length=10, choices=ScheduledChangeKind.choices)
    # rollout: {"rollout_percent": n}; state: {"state": a full state document}; enable/disable: {}.
    payload = models.JSONField(default=dict, blank=True)
    base = models.JSONField()
    created_by = models.CharField(max_length=150)
    created = models.DateTimeField(auto_now_add=True)
    status = models.CharField(
        max_length=10, choices=ScheduledChangeStatus.choices, default=ScheduledChangeStatus.PENDING
    )
    applied_at = models.DateTimeField(null=True, blank=True)
    note = models.TextField(blank=True)

    class Meta:
        ordering = ["at", "pk"]
        indexes = [
            # apply_due: pending changes whose time has come; retention: finished ones by time.
            models.Index(fields=["status", "at"], name="flag_schedule_status_at"),
        ]

    def __str__(self) -> str:
        return f"{self.flag.name} in {self.environment.name}: {self.describe()} at {self.at:%Y-%m-%d %H:%M} UTC"

    def describe(self) -> str:
        if self.kind == ScheduledChangeKind.ROLLOUT:
            return f"rollout {self.payload.get('rollout_percent')} %"
        if self.kind == ScheduledChangeKind.STATE:
            return "replace the state"
        return "on" if self.kind == ScheduledChangeKind.ENABLE else "off"


class SdkInstance(models.Model):
    """An Unleash SDK (a process of the product) that announced itself (``POST /api/client/register``)
    or sent metrics, in the environment of its token: what it is, and when it was last heard from."""

    environment = models.ForeignKey(Environment, on_delete=models.CASCADE, related_name="+")
    app_name = models.CharField(max_length=200)
    instance_id = models.CharField(max_length=200)
    sdk_version = models.CharField(max_length=200, blank=True)
    strategies = models.JSONField(default=list, blank=True)
    interval_ms = models.PositiveIntegerField(null=True, blank=True, help_text="How often it sends metrics.")
    started = models.DateTimeField(null=True, blank=True)
    first_seen = models.DateTimeField(default=timezone.now)
    last_seen = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-last_seen"]
        verbose_name = "SDK instance"
        constraints = [
            models.UniqueConstraint(fields=["environment", "app_name", "instance_id"], name="sdk_instance_unique"),
        ]
        indexes = [
            # Retention: instances not heard from since the cutoff.
            models.Index(fields=["last_seen"], name="sdk_instance_last_seen"),
        ]

    def __str__(self) -> str:
        return f"{self.app_name} / {self.instance_id} ({self.environment})"


class FlagUsage(models.Model):
    """Evaluations of one flag in one environment during one hour, as the SDKs counted and reported
    them (``POST /api/client/metrics``): how often on (yes), off (no), and each variant."""

    flag = models.CharField(max_length=200)
    environment = models.ForeignKey(Environment, on_delete=models.CASCADE, related_name="+")
    hour = models.DateTimeField(help_text="The start of the hour (UTC).")
    yes = models.PositiveBigIntegerField(default=0)
    no = models.PositiveBigIntegerField(default=0)
    variants = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-hour", "flag"]
        verbose_name = "flag usage (hour)"
        verbose_name_plural = "flag usage (hours)"
        constraints = [
            # Also serves "this flag's hours in this environment" (its leading columns).
            models.UniqueConstraint(fields=["flag", "environment", "hour"], name="flag_usage_unique"),
        ]
        indexes = [
            # Retention: hours before the cutoff.
            models.Index(fields=["hour"], name="flag_usage_hour"),
        ]

    def __str__(self) -> str:
        return f"{self.flag} in {self.environment} at {self.hour:%Y-%m-%d %H:00}"
