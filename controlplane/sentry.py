"""Sentry: initialised from settings only when SENTRY_DSN is set."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from controlplane.context import current_request_id
from controlplane.redaction import redact

if TYPE_CHECKING:
    from sentry_sdk.types import Event, Hint

# Events that are noise for operators: probes and hostile Host headers.
_NOISE_LOGGERS = {"django.security.DisallowedHost"}
_NOISE_EXCEPTIONS = {"DisallowedHost"}
_NOISE_PATH_PREFIXES = ("/health/",)


def _path_of(event: Event) -> str:
    url = str((event.get("request") or {}).get("url") or "")
    if "://" in url:
        return "/" + url.split("://", 1)[1].partition("/")[2]
    return url or str(event.get("transaction") or "")


def before_send(event: Event, hint: Hint) -> Event | None:
    """Drop noise, tag the request id, and scrub secrets by key name and by value."""
    if event.get("logger") in _NOISE_LOGGERS:
        return None
    exc_info = hint.get("exc_info")
    if exc_info and exc_info[0] is not None and exc_info[0].__name__ in _NOISE_EXCEPTIONS:
        return None
    if _path_of(event).startswith(_NOISE_PATH_PREFIXES):
        return None
    request_id = current_request_id()
    if request_id:
        event.setdefault("tags", {})["request_id"] = request_id
    return redact(event)


def before_send_transaction(event: Event, hint: Hint) -> Event | None:
    return before_send(event, hint)


def init_sentry(*, dsn: str, environment: str, release: str, traces_sample_rate: float) -> None:
    import sentry_sdk
    from sentry_sdk.integrations.celery import CeleryIntegration
    from sentry_sdk.integrations.django import DjangoIntegration
    from sentry_sdk.integrations.logging import LoggingIntegration

    sentry_sdk.init(
        dsn=dsn,
        environment=environment,
        release=release or None,
        integrations=[
            DjangoIntegration(),
            CeleryIntegration(),
            LoggingIntegration(level=logging.INFO, event_level=logging.ERROR),
        ],
        # No release-health sessions or client reports: one envelope per event, nothing else to drop.
        auto_session_tracking=False,
        send_client_reports=False,
        traces_sample_rate=traces_sample_rate,
        before_send=before_send,
        before_send_transaction=before_send_transaction,
        # A DSN that does not answer must not hold up a request or a shutdown.
        shutdown_timeout=2,
    )
    # Initialised while the settings load, before LOGGING is applied, the SDK finds its error logger
    # without handlers and gives it a stderr handler and a filter that passes records only in debug
    # mode. LOGGING replaces handlers but keeps a logger's filters: without this, the one line about
    # a dropped event (OneLineSentryErrors) would never be written.
    errors = logging.getLogger("sentry_sdk.errors")
    for stray in [f for f in errors.filters if type(f).__module__ == "sentry_sdk.debug"]:
        errors.removeFilter(stray)
    added = [h for h in errors.handlers if h.formatter is not None and "[sentry]" in (h.formatter._fmt or "")]
    for handler in added:
        errors.removeHandler(handler)
    if added:
        errors.setLevel(logging.WARNING)  # the SDK's DEBUG, until LOGGING sets it


class OneLineSentryErrors(logging.Filter):
    """The SDK logs a failed delivery with a traceback; one line says enough (event dropped, why)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            record.msg = (
                f"Sentry event dropped: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
            )
            record.args = ()
            record.exc_info = None
            record.exc_text = None
        return True
