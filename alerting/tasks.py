"""Celery tasks of alerting: thin, idempotent, taking ids; the services do the work.

Found by the Celery app's autodiscovery (``alerting`` is an installed app). The tasks were named
``monitoring.*`` while alerting lived in monitoring; those names stay registered as aliases, so a message
queued under them before an upgrade (a delivery waiting for its retry, an evaluation) still runs.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import shared_task
from celery.contrib.django.task import DjangoTask

logger = logging.getLogger(__name__)

MAX_DELIVERY_RETRIES = 5  # six attempts over about 15 minutes
BACKOFF_BASE_SECONDS = 30
BACKOFF_MAX_SECONDS = 600


def backoff_seconds(retries: int) -> int:
    """Seconds before retry number ``retries + 1``: 30, 60, 120, 240, 480, then at most 600."""
    return min(BACKOFF_BASE_SECONDS * 2**retries, BACKOFF_MAX_SECONDS)


def _deliver(task: Any, delivery_id: int) -> str:
    from alerting.services import delivery_attempt

    final = task.request.retries >= task.max_retries
    outcome = delivery_attempt(delivery_id=delivery_id, final=final)
    if outcome.retry:
        raise task.retry(countdown=backoff_seconds(task.request.retries))
    return outcome.status


def _evaluate() -> dict[str, Any]:
    from alerting.services import alert_rules_evaluate

    summary = alert_rules_evaluate()
    if summary.fired or summary.resolved or summary.errors:
        logger.info(
            "alert rules evaluated: %s fired, %s resolved, %s errors",
            len(summary.fired), len(summary.resolved), len(summary.errors),
        )  # fmt: skip
    return summary.as_dict()


@shared_task(
    name="alerting.deliver_notification",
    bind=True,
    base=DjangoTask,  # the app's task class under Django, named for delay_on_commit's type
    max_retries=MAX_DELIVERY_RETRIES,
    ignore_result=True,
    soft_time_limit=60,
    time_limit=90,
)
def deliver_notification(self: Any, delivery_id: int) -> str:
    """Send one Delivery. Transient failures retry with exponential backoff; each attempt is recorded."""
    return _deliver(self, delivery_id)


@shared_task(name="alerting.evaluate_alert_rules", ignore_result=True, soft_time_limit=50, time_limit=60)
def evaluate_alert_rules() -> dict[str, Any]:
    """Evaluate every rule now (a failed backup asks for it; the scheduled checks evaluate in their task)."""
    return _evaluate()


# The names these tasks had inside monitoring, for the messages queued under them before an upgrade;
# the same options.
@shared_task(
    name="monitoring.deliver_notification",
    bind=True,
    base=DjangoTask,  # the app's task class under Django, named for delay_on_commit's type
    max_retries=MAX_DELIVERY_RETRIES,
    ignore_result=True,
    soft_time_limit=60,
    time_limit=90,
)
def deliver_notification_as_before(self: Any, delivery_id: int) -> str:
    return _deliver(self, delivery_id)


@shared_task(name="monitoring.evaluate_alert_rules", ignore_result=True, soft_time_limit=50, time_limit=60)
def evaluate_alert_rules_as_before() -> dict[str, Any]:
    return _evaluate()
