"""A Prometheus-compatible server as a service's metric source (queried over its HTTP API)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from monitoring.models import MetricSource
    from monitoring.service_signals import Signal, SignalValue


def signal_value(source: MetricSource, signal: Signal, window: timedelta, now: datetime) -> SignalValue:
    raise NotImplementedError("The Prometheus source is being written (issue 17).")
