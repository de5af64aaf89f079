"""Celery tasks of alerting: thin, idempotent, taking ids; the services do the work.

``monitoring.alerting`` imports this module, so any process that can queue a delivery (web, the
worker running the checks, the worker's main process through admin autodiscovery) has the tasks
registered; the services are imported inside the tasks for that reason.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import shared_task

logger = logging.getLogger(__name__)

MAX_DELIVERY_RETRIES = 5  # six attempts over about 15 minutes
BACKOFF_BASE_SECONDS = 30
BACKOFF_MAX_SECONDS = 600


def backoff_seconds(retries: int) -> int:
    """Seconds before retry number ``retries + 1``: 30, 60, 120, 240, 480, then at most 600."""
    return min(BACKOFF_BASE_SECONDS * 2**retries, BACKOFF_MAX_SECONDS)


@shared_task(
    name="monitoring.deliver_notification",
    bind=True,
    max_retries=MAX_DELIVERY_RETRIES,
    ignore_result=True,
    soft_time_limit=60,
    time_limit=90,
)
def deliver_notification(self: Any, delivery_id: int) -> str:
    """Send one Delivery. Transient failures retry with exponential backoff; each attempt is recorded."""
    from monitoring.alerting import delivery_attempt

    final = self.request.retries >= self.max_retries
    outcome = delivery_attempt(delivery_id=delivery_id, final=final)
    if outcome.retry:
        raise self.retry(countdown=backoff_seconds(self.request.retries))
    return outcome.status


@shared_task(name="monitoring.evaluate_alert_rules", ignore_result=True, soft_time_limit=50, time_limit=60)
def evaluate_alert_rules() -> dict[str, Any]:
    """Beat runs this every minute (after the scheduled checks have stored their rows)."""
    from monitoring.alerting import alert_rules_evaluate

    summary = alert_rules_evaluate()
    if summary.fired or summary.resolved or summary.errors:
        logger.info(
            "alert rules evaluated: %s fired, %s resolved, %s errors",
            len(summary.fired), len(summary.resolved), len(summary.errors),
        )  # fmt: skip
    return summary.as_dict()


def evaluate_soon(sender: Any, **kwargs: Any) -> None:
    """``backups.signals.backup_failed``: evaluate the rules now rather than at the next minute's round."""
    try:
        evaluate_alert_rules.delay()
    except Exception as exc:  # noqa: BLE001 - the broker down: the scheduled evaluation still sees it
        logger.warning("could not queue an alert evaluation: %s", exc)
