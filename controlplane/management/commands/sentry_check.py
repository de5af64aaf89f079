"""Send a test error to Sentry from this process and from a Celery worker."""

from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from controlplane.context import new_request_id, request_id_var
from controlplane.tasks import SentryCheckError, sentry_check


class Command(BaseCommand):
    help = "Report a test error to Sentry here and from a worker; both carry the same request id."

    def handle(self, *args: object, **options: object) -> None:
        if not settings.SENTRY_DSN:
            raise CommandError("SENTRY_DSN is not set: Sentry reporting is off")
        import sentry_sdk

        request_id = new_request_id()
        request_id_var.set(request_id)
        event_id = sentry_sdk.capture_exception(
            SentryCheckError("Sentry check from manage.py (this error is expected)")
        )
        sentry_sdk.flush(timeout=5)
        sentry_check.delay()
        self.stdout.write(f"sent event {event_id} and queued a failing task; request id {request_id}")
