"""Gauges of the control plane's state that an app contributes to ``/metrics`` without monitoring importing it.

``/metrics`` lives in ``monitoring``, which may not import ``deployments`` and reads the other apps only
through their selectors; an app that has state to chart registers a function from its ``apps.py``
(``register_state_metrics``) that yields its gauge families (``prometheus_client.core.GaugeMetricFamily``),
read from its own selectors at scrape time in a query or two. ``collect_state`` runs every registered
function, each on its own: one that raises (its database down, say) is logged and left out, and
``controlplane_state_collector_up{app}`` says 0 for it, so a scrape never fails for one app's state.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator

from prometheus_client.core import GaugeMetricFamily, Metric

logger = logging.getLogger(__name__)

StateMetrics = Callable[[], Iterable[Metric]]

# app label -> function; a dict, so a second ready() (tests that reload apps) replaces rather than repeats.
_REGISTRY: dict[str, StateMetrics] = {}


def register_state_metrics(app: str, read: StateMetrics) -> None:
    _REGISTRY[app] = read


def registered() -> dict[str, StateMetrics]:
    return dict(_REGISTRY)


def collect_state() -> Iterator[Metric]:
    """Every registered app's families, then whether each app's function answered (1) or raised (0)."""
    up = GaugeMetricFamily(
        "controlplane_state_collector_up",
        "Whether the app's state gauges were read at this scrape (1) or its read failed (0)",
        labels=["app"],
    )
    took = GaugeMetricFamily(
        "controlplane_state_collector_duration_seconds", "Time the app's state gauges took to read", labels=["app"]
    )
    for app, read in _REGISTRY.items():
        started = time.perf_counter()
        try:
            families = list(read())  # all or nothing: a family half-read is not shown
        except Exception:  # noqa: BLE001 - one app's failure (a database outage) must not fail the scrape
            logger.exception("state metrics of %s could not be read; left out of this scrape", app)
            up.add_metric([app], 0)
        else:
            yield from families
            up.add_metric([app], 1)
        took.add_metric([app], time.perf_counter() - started)
    yield up
    yield took


class StateCollector:
    """A prometheus-client collector over the registry (``registry.register(StateCollector())``)."""

    def collect(self) -> Iterator[Metric]:
        return collect_state()

    def describe(self) -> list[Metric]:
        return []  # no read at registration: the families are known at scrape time only
