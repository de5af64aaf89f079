"""Which configured server does not answer, said in one line that names its variable and shows no secret.

``manage.py`` and ``manage.py preflight`` print these lines instead of a traceback: an operator starting
the control plane on a database that is down needs to know which URL to look at, not Django's stack.
"""

from __future__ import annotations

from django.conf import settings

from controlplane.redaction import redact_url, redact_urls


def first_line(exc: BaseException) -> str:
    """The first line of the error's text (psycopg adds a hint on a second), without a URL's secret."""
    text = str(exc).strip()
    return redact_urls(text.splitlines()[0].strip() if text else type(exc).__name__)


def database_address() -> str:
    if settings.DATABASE_URL.startswith("sqlite:"):  # a path holds no secret (redact_url drops a slash)
        return f"DATABASE_URL={settings.DATABASE_URL}"
    if settings.DATABASE_URL:
        return f"DATABASE_URL={redact_url(settings.DATABASE_URL)}"
    return f"embedded SQLite at {settings.DATABASES['default']['NAME']}"


def unreachable(part: str, address: str, exc: BaseException) -> str:
    return f"{part} does not answer ({address}): {first_line(exc)}"


def database_unreachable(exc: BaseException) -> str | None:
    """The line for ``exc`` when it means the database cannot be reached: no connection could be made,
    or the one there was is gone. None for any other database error (a missing table, a deadlock, a
    statement timeout), whose traceback is what a developer needs."""
    if _cannot_reach(exc.__cause__ or exc):
        return "controlplane: " + unreachable("the database", database_address(), exc)
    return None


# SQLSTATE classes of a connection that was lost or refused by the server: 08 connection exception,
# 57P operator intervention (shut down, restarting, cannot connect now), 53300 too many connections.
_CONNECTION_STATES = ("08", "57P", "53300")


def _cannot_reach(error: BaseException) -> bool:
    import sqlite3

    if isinstance(error, sqlite3.OperationalError):  # the file's directory is missing or not ours
        return "unable to open database file" in str(error)
    try:
        import psycopg
    except ImportError:  # no PostgreSQL driver: the database is SQLite
        return False
    if not isinstance(error, psycopg.OperationalError | psycopg.InterfaceError):
        return False
    # A failed connect (refused, timed out, authentication, no such database), a pool that found no
    # connection in time and a connection already closed carry no SQLSTATE.
    state = error.sqlstate
    return state is None or state.startswith(_CONNECTION_STATES)
