"""Check, before the processes start, that the database and the broker answer."""

from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import connection
from django.db.utils import Error as DatabaseError
from kombu import Connection


def _redact(url: str) -> str:
    """The URL without its password, fit for a message."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
        return urlunsplit(parts._replace(netloc=netloc))
    return url


class Command(BaseCommand):
    help = "Exit non-zero with one line if the database or the Celery broker does not answer."

    def handle(self, *args: object, **options: object) -> None:
        try:
            connection.ensure_connection()
        except DatabaseError as exc:
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CommandError(f"database does not answer (DATABASE_URL): {first_line}") from None

        broker_url = settings.CELERY_BROKER_URL
        timeout = settings.CELERY_BROKER_CONNECTION_TIMEOUT
        try:
            with Connection(
                broker_url,
                connect_timeout=timeout,
                transport_options=getattr(settings, "CELERY_BROKER_TRANSPORT_OPTIONS", {}),
            ) as conn:
                conn.ensure_connection(max_retries=1, timeout=timeout)
        except Exception as exc:  # kombu raises transport-specific errors; all mean "no broker"
            raise CommandError(f"broker does not answer (CELERY_BROKER_URL={_redact(broker_url)}): {exc}") from None
        self.stdout.write(f"database and broker answer ({connection.vendor}, {broker_url.split(':', 1)[0]})")
