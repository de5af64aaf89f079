"""Check, before the processes start, that every configured server answers: database, cache and broker."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import connection

from controlplane.redaction import redact_url
from controlplane.servers import database_address, unreachable


def _database() -> str:
    try:
        if connection.vendor == "postgresql":
            import psycopg  # the PostgreSQL driver requirements.txt pins, which Django's backend also uses

            # A connection of its own rather than one from the pool (DATABASE_POOL_SIZE): a pool answers a
            # refused connection only after its whole timeout, and without the reason.
            with psycopg.connect(**connection.get_connection_params()) as raw:
                raw.execute("SELECT 1")
        else:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
    finally:
        connection.close()
    return connection.vendor


def _cache() -> str:
    from django.core.cache import cache

    token = os.urandom(8).hex()
    key = f"preflight:{token}"
    cache.set(key, token, 30)
    if cache.get(key) != token:  # a backend that swallows its errors answers None
        raise RuntimeError("the cache did not return what was written")
    cache.delete(key)
    return "redis" if settings.REDIS_URL else "file"


def _broker() -> str:
    from kombu import Connection

    timeout = settings.CELERY_BROKER_CONNECTION_TIMEOUT
    with Connection(
        settings.CELERY_BROKER_URL,
        connect_timeout=timeout,
        transport_options=getattr(settings, "CELERY_BROKER_TRANSPORT_OPTIONS", {}),
    ) as conn:
        conn.ensure_connection(max_retries=1, timeout=timeout)
    return settings.CELERY_BROKER_URL.split(":", 1)[0]


def _parts() -> list[tuple[str, str, Callable[[], str], float]]:
    """(part, where it is configured, probe, the probe's own timeout in seconds)."""
    db_options = settings.DATABASES["default"].get("OPTIONS", {})
    cache_address = (
        f"REDIS_URL={redact_url(settings.REDIS_URL)}"
        if settings.REDIS_URL
        else f"embedded file cache at {settings.CACHES['default']['LOCATION']}"
    )
    return [
        ("database", database_address(), _database, float(db_options.get("connect_timeout", 5))),
        # set, get and delete: three calls, each with its socket timeout.
        ("cache", cache_address, _cache, 3 * float(getattr(settings, "REDIS_SOCKET_TIMEOUT", 1))),
        (
            "broker",
            f"CELERY_BROKER_URL={redact_url(settings.CELERY_BROKER_URL)}",
            _broker,
            float(settings.CELERY_BROKER_CONNECTION_TIMEOUT),
        ),
    ]


class Command(BaseCommand):
    help = "Exit non-zero with one line if the database, the cache or the Celery broker does not answer."

    def handle(self, *args: object, **options: object) -> None:
        parts = _parts()
        answers: dict[str, str | BaseException] = {}

        def probe(part: str, check: Callable[[], str]) -> None:
            try:
                answers[part] = check()
            except Exception as exc:  # each driver raises its own errors; all mean "does not answer"
                answers[part] = exc

        # All at once, so that three servers that hang cost one timeout, not three. Daemon threads: one
        # stuck past its own timeout does not keep the process from exiting with its line.
        threads = [
            threading.Thread(target=probe, args=(part, check), name=f"preflight-{part}", daemon=True)
            for part, _, check, _ in parts
        ]
        for thread in threads:
            thread.start()
        deadline = max(timeout for *_, timeout in parts) + 2
        ends = time.monotonic() + deadline
        for thread in threads:
            thread.join(max(0.0, ends - time.monotonic()))

        problems = []
        for part, address, _, _ in parts:
            answer = answers.get(part, TimeoutError(f"no answer within {deadline:g} s"))
            if isinstance(answer, BaseException):
                problems.append(unreachable(part, address, answer))
        if problems:
            raise CommandError("; ".join(problems))
        self.stdout.write(
            f"database ({answers['database']}), cache ({answers['cache']}) and broker ({answers['broker']}) answer"
        )
