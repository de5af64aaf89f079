from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, ClassVar

from django.core.validators import MaxValueValidator
from django.db import models
from django.http import HttpRequest
from django.urls import reverse
from waffle.managers import FlagManager as WaffleFlagManager
from waffle.models import AbstractUserFlag

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


class Flag(AbstractUserFlag):
    """A feature flag: a master switch, a percentage rollout and named targeting keys.

    Chosen as waffle's flag model (``WAFFLE_FLAG_MODEL``) from the first migration, because waffle
    cannot swap its flag model once tables exist.
    """

    enabled = models.BooleanField(default=False, help_text="Master switch: off means off for everyone.")
    rollout_percent = models.PositiveSmallIntegerField(
        default=0,
        validators=[MaxValueValidator(100)],
        help_text="Share of users (0 to 100) who get the flag when it is enabled.",
    )
    targeting_keys = models.JSONField(
        default=list, blank=True, help_text="The product's user ids that always get the flag when it is enabled."
    )
    description = models.TextField(blank=True)
    owner = models.CharField(max_length=100, blank=True)

    objects: ClassVar[FlagManager] = FlagManager()

    class Meta(AbstractUserFlag.Meta):
        constraints = [
            models.CheckConstraint(
                condition=models.Q(rollout_percent__gte=0, rollout_percent__lte=100),
                name="flag_rollout_percent_0_100",
            ),
        ]

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
            flag = made[name] = cls(
                name=compiled.name,
                enabled=compiled.enabled,
                rollout_percent=compiled.rollout_percent,
                targeting_keys=sorted(compiled.targeting_keys),
                description=compiled.description,
                owner=compiled.owner,
            )
        return flag

    def is_active(self, request: HttpRequest, read_only: bool = False) -> bool:
        """waffle's entry point (flag_is_active, template tags, decorators): the control plane's
        rule on the snapshot's copy of the flag, keyed by the logged-in user's id instead of waffle's
        random per-request cookie. A flag the snapshot does not hold is off."""
        from flags.evaluation import TargetingKeyMissing, evaluate
        from flags.snapshot import current

        compiled = current().flags.get(self.name)
        if compiled is None:
            return False
        user: Any = getattr(request, "user", None)
        key = str(user.pk) if user is not None and user.is_authenticated else None
        try:
            return evaluate(compiled, key)[0]
        except TargetingKeyMissing:
            return False
