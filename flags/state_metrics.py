"""The flags' gauges on ``/metrics`` (registered in ``flags/apps.py``): each flag's switch and rollout."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric


def flag_gauges() -> Iterator[Metric]:
    """One query: every flag's production switch and strategies, as stored. The rollout is today's
    one line; a flag whose production state holds more than that (constraints, segments, variants,
    other strategies) reports -1."""
    from django.db.models import Count

    from controlplane.models import DEFAULT_FLAGS_ENVIRONMENT
    from flags.definitions import simple_of
    from flags.models import FlagState

    enabled = GaugeMetricFamily(
        "controlplane_flag_enabled", "Whether the flag is switched on (1) or off (0)", labels=["flag"]
    )
    rollout = GaugeMetricFamily(
        "controlplane_flag_rollout_percent",
        "The share of keys the flag is on for while enabled, in percent (-1: more than a rollout)",
        labels=["flag"],
    )
    rows = (
        FlagState.objects.filter(environment__name=DEFAULT_FLAGS_ENVIRONMENT)
        .values(
            "pk",
            "flag__name",
            "enabled",
            "strategies__pk",
            "strategies__position",
            "strategies__kind",
            "strategies__title",
            "strategies__rollout",
            "strategies__stickiness",
            "strategies__group_id",
            "strategies__user_ids",
            "strategies__parameters",
            "strategies__missing_segments",
        )
        .annotate(
            n_state_variants=Count("variants", distinct=True),
            n_constraints=Count("strategies__constraints", distinct=True),
            n_variants=Count("strategies__variants", distinct=True),
            n_segments=Count("strategies__segments", distinct=True),
        )
        .order_by("flag__name", "strategies__position", "strategies__pk")
    )
    states: dict[str, dict[str, Any]] = {}
    for row in rows:  # one per strategy (one with none for a state without strategies)
        name = row["flag__name"]
        doc = states.setdefault(
            name, {"enabled": row["enabled"], "strategies": [], "variants": [None] * row["n_state_variants"]}
        )
        if row["strategies__pk"] is None:
            continue
        # The shape simple_of reads; only whether there are constraints, segments or variants matters.
        doc["strategies"].append(
            {
                "kind": row["strategies__kind"],
                "title": row["strategies__title"],
                "rollout": row["strategies__rollout"],
                "stickiness": row["strategies__stickiness"] or "default",
                "group_id": row["strategies__group_id"],
                "user_ids": row["strategies__user_ids"],
                "parameters": row["strategies__parameters"],
                "missing_segments": row["strategies__missing_segments"],
                "constraints": [None] * row["n_constraints"],
                "variants": [None] * row["n_variants"],
                "segments": [None] * row["n_segments"],
            }
        )
    for name, doc in states.items():
        enabled.add_metric([name], 1 if doc["enabled"] else 0)
        simple = simple_of(doc, name)
        rollout.add_metric([name], simple["rollout_percent"] if simple is not None else -1)
    yield enabled
    yield rollout
