from __future__ import annotations

from typing import Any

from celery import shared_task


class SentryCheckError(RuntimeError):
    """Raised on purpose by ``manage.py sentry_check`` to show that errors reach Sentry."""


@shared_task(name="controlplane.tasks.sentry_check", ignore_result=True, acks_late=False)
def sentry_check() -> None:
    """Fail on purpose in a worker, so an operator sees a worker's error arrive in Sentry."""
    raise SentryCheckError("Sentry check from a Celery worker (this error is expected)")


@shared_task(name="controlplane.tasks.prune_old_rows", ignore_result=True, soft_time_limit=3000, time_limit=3300)
def prune_old_rows() -> dict[str, Any]:
    """Daily: every growing table pruned to its retention setting, in batches."""
    from controlplane.retention import prune

    return prune()
