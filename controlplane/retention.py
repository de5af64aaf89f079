"""Retention: every table that grows without bound, its setting, and a daily prune in small batches.

Each app registers a ``Rule`` per table it owns from its ``apps.py`` (``register_rules``); ``prune``
applies what is registered. Backups have their own retention per target (``backups.services.backups_prune``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

logger = logging.getLogger(__name__)
BATCH = 5000


@dataclass(frozen=True)
class Rule:
    name: str
    setting: str  # days; 0 keeps everything
    rows: Callable[[datetime], QuerySet]  # what is older than the cutoff and may go


def _audit_events(cutoff: datetime) -> QuerySet:
    from controlplane.models import AuditEvent

    return AuditEvent.objects.filter(time__lt=cutoff)


AUDIT = [Rule("audit events", "AUDIT_RETENTION_DAYS", _audit_events)]

# (app label, rule) in the order the apps registered them; each app registers the tables it owns from
# its apps.py (``register_rules``), so this module never reaches into an app.
_REGISTRY: list[tuple[str, Rule]] = []


def register_rules(app_label: str, *app_rules: Rule) -> None:
    known = {rule.name for _, rule in _REGISTRY}
    _REGISTRY.extend((app_label, rule) for rule in app_rules if rule.name not in known)


def rules() -> list[Rule]:
    return [rule for _, rule in _REGISTRY]


def delete_in_batches(queryset: QuerySet, batch: int = BATCH) -> int:
    """Delete ``queryset`` a batch at a time: short transactions never block writers for long, and a
    crash half-way loses no progress."""
    deleted = 0
    while True:
        ids = list(queryset.order_by().values_list("pk", flat=True)[:batch])
        if not ids:
            return deleted
        with transaction.atomic():
            deleted += queryset.model.objects.filter(pk__in=ids).delete()[0]


def prune(*, now: datetime | None = None, batch: int = BATCH) -> dict[str, Any]:
    """Apply every rule; returns rows deleted per rule (None where the setting keeps everything)."""
    now = now or timezone.now()
    deleted: dict[str, Any] = {}
    for rule in rules():
        days = getattr(settings, rule.setting)
        if not days:
            deleted[rule.name] = None
            continue
        deleted[rule.name] = delete_in_batches(rule.rows(now - timedelta(days=days)), batch)
    logger.info("retention: %s", deleted)
    return deleted
