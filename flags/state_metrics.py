"""The flags' gauges on ``/metrics`` (registered in ``flags/apps.py``): each flag's switch and rollout."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric


def flag_gauges() -> Iterator[Metric]:
    """Every flag's switch in production as stored (one query), and its rollout percentage as the
    snapshot compiled it; a flag whose production state has more than today's one line reports -1."""
    from controlplane.models import DEFAULT_FLAGS_ENVIRONMENT
    from flags.models import FlagState
    from flags.snapshot import current

    enabled = GaugeMetricFamily(
        "controlplane_flag_enabled", "Whether the flag is switched on (1) or off (0)", labels=["flag"]
    )
    rollout = GaugeMetricFamily(
        "controlplane_flag_rollout_percent",
        "The share of keys the flag is on for while enabled, in percent",
        labels=["flag"],
    )
    states = FlagState.objects.filter(environment__name=DEFAULT_FLAGS_ENVIRONMENT).order_by("flag__name")
    compiled = current().flags
    for name, on in states.values_list("flag__name", "enabled"):
        enabled.add_metric([name], 1 if on else 0)
        flag = compiled.get(name)
        if flag is not None:
            rollout.add_metric([name], -1 if flag.custom else flag.rollout_percent)
    yield enabled
    yield rollout
