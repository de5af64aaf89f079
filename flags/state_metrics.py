"""The flags' gauges on ``/metrics`` (registered in ``flags/apps.py``): each flag's switch and rollout."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric


def flag_gauges() -> Iterator[Metric]:
    """One query: every flag's name, switch and rollout percentage, as stored."""
    from flags.models import Flag

    enabled = GaugeMetricFamily(
        "controlplane_flag_enabled", "Whether the flag is switched on (1) or off (0)", labels=["flag"]
    )
    rollout = GaugeMetricFamily(
        "controlplane_flag_rollout_percent",
        "The share of keys the flag is on for while enabled, in percent",
        labels=["flag"],
    )
    for name, on, percent in Flag.objects.order_by("name").values_list("name", "enabled", "rollout_percent"):
        enabled.add_metric([name], 1 if on else 0)
        rollout.add_metric([name], percent)
    yield enabled
    yield rollout
