"""The alerts' gauges on ``/metrics`` (registered in ``alerting/apps.py``): open alerts by state and severity."""

from __future__ import annotations

from collections.abc import Iterator

from django.db.models import Count
from prometheus_client.core import GaugeMetricFamily, Metric


def alert_gauges() -> Iterator[Metric]:
    """One query. Every (open state, severity) pair is shown, 0 when no alert is in it, so a chart's
    series does not vanish when the last alert resolves; resolved alerts are history, not state."""
    from alerting.models import Alert, AlertState, Severity

    counts = {
        (row["state"], row["rule__severity"]): row["n"]
        for row in Alert.objects.open().values("state", "rule__severity").annotate(n=Count("id")).order_by()
    }
    alerts = GaugeMetricFamily(
        "controlplane_alerts",
        "Open alerts (pending or firing) by state and by their rule's severity",
        labels=["state", "severity"],
    )
    for state in (AlertState.PENDING, AlertState.FIRING):
        for severity in Severity.values:
            alerts.add_metric([state.value, severity], counts.get((state.value, severity), 0))
    yield alerts
