"""The deployments' gauges on ``/metrics`` (registered in ``deployments/apps.py``, since monitoring may
not import this app): deployments by environment and status, whether one is under way, and the guarded
rollouts under way (counted apart: a plan holds its flag's lock, not the environment's deploy lock, and
runs beside a deploy for hours at a time)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from django.db.models import Count
from prometheus_client.core import GaugeMetricFamily, Metric


def deployment_gauges() -> Iterator[Metric]:
    """Two queries: the environments, and the deployments counted per environment, status and type. Every
    status of every environment is shown, 0 when none is in it."""
    from deployments.models import ACTIVE, Deployment, DeploymentStatus, DeploymentType, Environment

    environments = sorted(Environment.objects.values_list("name", flat=True))
    counts: Counter[tuple[str, str]] = Counter()
    deploying: Counter[str] = Counter()  # active deployments that hold the environment's deploy lock
    guarded: Counter[str] = Counter()  # active guarded rollouts
    rows = Deployment.objects.values("environment__name", "status", "type").annotate(n=Count("id")).order_by()
    for row in rows:
        environment, status, n = row["environment__name"], row["status"], row["n"]
        counts[(environment, status)] += n
        if status in ACTIVE:
            (guarded if row["type"] == DeploymentType.GUARDED else deploying)[environment] += n
    deployments = GaugeMetricFamily(
        "controlplane_deployments",
        "Deployments by environment and status, all time (guarded rollouts included)",
        labels=["environment", "status"],
    )
    active = GaugeMetricFamily(
        "controlplane_deployment_active",
        "Whether a deployment is queued, running or rolling back in the environment (1) or not (0); "
        "guarded rollouts are not deployments here (controlplane_guarded_rollouts_active)",
        labels=["environment"],
    )
    rollouts = GaugeMetricFamily(
        "controlplane_guarded_rollouts_active",
        "Guarded flag rollouts queued, running or rolling back in the environment",
        labels=["environment"],
    )
    for environment in environments:
        for status in DeploymentStatus.values:
            deployments.add_metric([environment, status], counts[(environment, status)])
        active.add_metric([environment], 1 if deploying[environment] else 0)
        rollouts.add_metric([environment], guarded[environment])
    yield deployments
    yield active
    yield rollouts
