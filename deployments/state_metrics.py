"""The deployments' gauges on ``/metrics`` (registered in ``deployments/apps.py``, since monitoring may
not import this app): deployments by environment and status, and whether one is under way."""

from __future__ import annotations

from collections.abc import Iterator

from django.db.models import Count
from prometheus_client.core import GaugeMetricFamily, Metric


def deployment_gauges() -> Iterator[Metric]:
    """Two queries: the environments, and the deployments counted per environment and status. Every
    status of every environment is shown, 0 when none is in it."""
    from deployments.models import ACTIVE, Deployment, DeploymentStatus, Environment

    environments = sorted(Environment.objects.values_list("name", flat=True))
    counts = {
        (row["environment__name"], row["status"]): row["n"]
        for row in Deployment.objects.values("environment__name", "status").annotate(n=Count("id")).order_by()
    }
    deployments = GaugeMetricFamily(
        "controlplane_deployments", "Deployments by environment and status, all time", labels=["environment", "status"]
    )
    active = GaugeMetricFamily(
        "controlplane_deployment_active",
        "Whether a deployment is queued, running or rolling back in the environment (1) or not (0)",
        labels=["environment"],
    )
    for environment in environments:
        for status in DeploymentStatus.values:
            deployments.add_metric([environment, status], counts.get((environment, status), 0))
        under_way = any(counts.get((environment, status), 0) for status in ACTIVE)
        active.add_metric([environment], 1 if under_way else 0)
    yield deployments
    yield active
