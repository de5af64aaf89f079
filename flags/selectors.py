"""Reads of flags for the rest of the control plane."""

from __future__ import annotations

import logging
from datetime import UTC
from typing import Any

from flags.evaluation import TargetingKeyMissing, evaluate
from flags.snapshot import current

logger = logging.getLogger(__name__)

# The control plane's own flags (shipped in flags/fixtures/wingmanmatch.json).
EXTERNAL_ALERTS = "external_alerts"  # gates outbound notifications
BACKUP_VERIFICATION = "backup_verification"  # gates the scheduled verification
ENHANCED_MONITORING = "enhanced_monitoring"  # gates the extra health checks
# Gate the request rollups and the scraping of services (read with default=True: a missing flag
# leaves them on, as they were before anything read it).
PERFORMANCE_MONITORING = "performance_monitoring"
PERFORMANCE_ALERTS = "performance_alerts"  # gates the latency and error-rate alert rules (same default)


def is_on(name: str, key: str | None = None, *, default: bool = False) -> bool:
    """Whether flag ``name`` is on (for ``key``, if given). The control plane obeys its own flags
    through this helper; a missing flag, or one that needs a key, answers ``default``."""
    try:
        snap = current()
        flag = snap.flags.get(name)
    except Exception as exc:  # database and cache both down on a cold process
        logger.error("flags unavailable (%s); %s answers its default %s", exc, name, default)
        return default
    if flag is None:
        return default
    try:
        return evaluate(flag, key, snap.lookup())[0]
    except TargetingKeyMissing:
        return default


def flag_history(flag_pk: int, limit: int = 50) -> list:
    """The flag's audit events, newest first (served by the audit_object_time index)."""
    from controlplane.models import AuditEvent

    return list(AuditEvent.objects.filter(object_type="flags.flag", object_id=str(flag_pk))[:limit])


def flags_summary(changes: int = 5) -> dict[str, Any]:
    """How many flags are on for everyone, on for some, off; and the latest changes (the dashboard)."""
    from controlplane.models import AuditEvent

    counts = {"on": 0, "partial": 0, "off": 0}
    for flag in current().flags.values():
        if flag.custom:
            counts["partial" if flag.enabled else "off"] += 1
        elif not flag.enabled or (flag.rollout_percent == 0 and not flag.targeting_keys):
            counts["off"] += 1
        elif flag.rollout_percent == 100:
            counts["on"] += 1
        else:
            counts["partial"] += 1
    latest = list(AuditEvent.objects.filter(object_type="flags.flag").order_by("-time")[:changes])
    return {"counts": counts, "total": sum(counts.values()), "changes": latest}


def compiled_of(flag: Any, environment: str | None = None, segments: Any = None) -> Any:
    """A flag (loaded with ``flags.definitions.flags_queryset()`` to spare queries) compiled as stored,
    in ``environment`` (production when None): what pages show and evaluate, before any snapshot."""
    from controlplane.models import DEFAULT_FLAGS_ENVIRONMENT
    from flags.definitions import compile_flag, compile_segments, flag_doc, segment_doc, simple_of
    from flags.evaluation import compiled
    from flags.models import Segment

    if segments is None:
        segments = compile_segments(segment_doc(s) for s in Segment.objects.prefetch_related("constraints"))
    doc = flag_doc(flag)
    state = doc["environments"].get(environment or DEFAULT_FLAGS_ENVIRONMENT)
    simple = simple_of(state, flag.name) if state is not None else None
    return compiled(compile_flag(doc, state, segments), simple, doc["owner"])


def segments_compiled() -> Any:
    from flags.definitions import compile_segments, segment_doc
    from flags.models import Segment

    return compile_segments(segment_doc(s) for s in Segment.objects.prefetch_related("constraints"))


# --- Usage and stale flags --------------------------------------------------------------------------

USAGE_DAYS = 30


def usage_of(name: str, *, days: int = USAGE_DAYS, now: Any = None) -> dict[str, Any]:
    """A flag's evaluations (OFREP's and the SDKs' counts): per day over the last ``days`` days, the total
    and the largest day (for a chart), and when each environment last evaluated it (hour precision)."""
    from datetime import timedelta

    from django.db.models import Max
    from django.utils import timezone

    from flags.models import FlagUsage

    now = now or timezone.now()
    today = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    first = today - timedelta(days=days - 1)
    per_day = [0] * days
    for hour, yes, no in FlagUsage.objects.filter(flag=name, hour__gte=first).values_list("hour", "yes", "no"):
        index = (hour.astimezone(UTC) - first).days
        if 0 <= index < days:
            per_day[index] += yes + no
    last = {
        row["environment__name"]: row["last"]
        for row in FlagUsage.objects.filter(flag=name)
        .values("environment__name")
        .annotate(last=Max("hour"))
        .order_by("environment__name")
    }
    return {
        "days": [(first + timedelta(days=i)).date() for i in range(days)],
        "per_day": per_day,
        "total": sum(per_day),
        "max": max(per_day),
        "last": last,
        "last_any": max(last.values()) if last else None,
    }


def stale_flags(*, now: Any = None) -> list[dict[str, Any]]:
    """Flags ready to remove from the code, oldest reason first: not evaluated (OFREP or an SDK) for
    ``FLAG_STALE_UNUSED_DAYS``, or on for everyone in every environment, unchanged for
    ``FLAG_STALE_FULLY_ON_DAYS``. Each with its reason in words and the time it has held since."""
    from datetime import timedelta

    from django.conf import settings
    from django.db.models import Max
    from django.utils import timezone

    from controlplane.models import Environment
    from flags.definitions import flags_queryset
    from flags.models import FlagUsage

    now = now or timezone.now()
    unused_cutoff = now - timedelta(days=settings.FLAG_STALE_UNUSED_DAYS)
    on_cutoff = now - timedelta(days=settings.FLAG_STALE_FULLY_ON_DAYS)
    last_used = dict(FlagUsage.objects.values("flag").annotate(last=Max("hour")).values_list("flag", "last"))
    environments = list(Environment.objects.values_list("name", flat=True))
    segments = segments_compiled()
    found = []
    for flag in flags_queryset():
        last = last_used.get(flag.name)
        if (last is None or last < unused_cutoff) and flag.created < unused_cutoff:
            since = last or flag.created
            words = f"not evaluated since {since:%Y-%m-%d}" if last else "never evaluated"
            found.append({"flag": flag, "reason": "unused", "words": words, "since": since})
            continue
        states = {state.environment.name: state for state in flag.states.all()}
        if environments and all(name in states for name in environments):
            changed = max(state.modified for state in states.values())
            everyone = all(_on_for_everyone(compiled_of(flag, name, segments)) for name in environments)
            if everyone and changed < on_cutoff:
                words = f"on for everyone in every environment since {changed:%Y-%m-%d}"
                found.append({"flag": flag, "reason": "fully_on", "words": words, "since": changed})
    return sorted(found, key=lambda item: (item["flag"].owner, item["since"], item["flag"].name))


def _on_for_everyone(compiled: Any) -> bool:
    """On, with one answer for every context (no constraint, no partial rollout, no dependency), and that
    answer is on."""
    from flags.targeting import Context, evaluate

    definition = compiled.engine()
    return bool(definition.enabled and definition.static and evaluate(definition, Context()).enabled)
