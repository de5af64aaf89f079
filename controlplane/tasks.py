from __future__ import annotations

from celery import shared_task


class SentryCheckError(RuntimeError):
    """Raised on purpose by ``manage.py sentry_check`` to show that errors reach Sentry."""


@shared_task(name="controlplane.tasks.sentry_check", ignore_result=True, acks_late=False)
def sentry_check() -> None:
    """Fail on purpose in a worker, so an operator sees a worker's error arrive in Sentry."""
    raise SentryCheckError("Sentry check from a Celery worker (this error is expected)")
