"""Reads of flags for the rest of the control plane."""

from __future__ import annotations

import logging
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
