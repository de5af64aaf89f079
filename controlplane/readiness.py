"""Production readiness: each item passes, warns or fails, with a hint that says what to do.

Each app registers its items in its ``apps.py`` (``register_items``): the configuration here, alert
channels in monitoring, backup targets in backups. ``manage.py readiness``, ``manage.py check --deploy``
(each app's items as that app's system check) and ``GET /api/deployment/config/production`` all read
``readiness_items()``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from urllib.parse import urlsplit

from django.conf import settings

PASS, WARN, FAIL = "pass", "warn", "fail"
HSTS_ONE_YEAR = 31_536_000


@dataclass(frozen=True)
class Item:
    name: str
    status: str
    message: str
    hint: str = ""

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def _environment() -> Item:
    if settings.PRODUCTION:
        return Item("environment", PASS, "DJANGO_ENV is production")
    return Item("environment", FAIL, f"DJANGO_ENV is {settings.DJANGO_ENV}", "set DJANGO_ENV=production")


def _secret_key() -> Item:
    key = settings.SECRET_KEY
    if len(key) < 50 or len(set(key)) < 5 or key.startswith("django-insecure"):
        return Item("secret_key", FAIL, "SECRET_KEY is short or a default", "set SECRET_KEY to 50+ random characters")
    if not settings.PRODUCTION:
        return Item("secret_key", WARN, "SECRET_KEY is the generated development key", "set SECRET_KEY explicitly")
    return Item("secret_key", PASS, "SECRET_KEY is long and random")


def _debug() -> Item:
    if settings.DEBUG:
        return Item("debug", FAIL, "DEBUG is on: errors show settings and code", "set DEBUG=false")
    return Item("debug", PASS, "DEBUG is off")


def _allowed_hosts() -> Item:
    hosts = settings.ALLOWED_HOSTS
    if not hosts:
        return Item("allowed_hosts", FAIL, "ALLOWED_HOSTS is empty", "set ALLOWED_HOSTS=ops.example.com")
    if "*" in hosts:
        return Item("allowed_hosts", WARN, "ALLOWED_HOSTS accepts any host", "name the hosts in ALLOWED_HOSTS")
    if not settings.PRODUCTION and set(hosts) <= {"127.0.0.1", "localhost", "[::1]"}:
        return Item("allowed_hosts", FAIL, "ALLOWED_HOSTS is loopback only", "set ALLOWED_HOSTS to the public host")
    return Item("allowed_hosts", PASS, f"ALLOWED_HOSTS is {', '.join(hosts)}")


def _https() -> Item:
    missing = []
    if not settings.SECURE_SSL_REDIRECT:
        missing.append("SECURE_SSL_REDIRECT")
    if not settings.SESSION_COOKIE_SECURE:
        missing.append("SESSION_COOKIE_SECURE")
    if not settings.CSRF_COOKIE_SECURE:
        missing.append("CSRF_COOKIE_SECURE")
    if settings.SECURE_HSTS_SECONDS < HSTS_ONE_YEAR:
        missing.append("SECURE_HSTS_SECONDS")
    if missing:
        return Item(
            "https",
            FAIL,
            f"not enforced: {', '.join(missing)}",
            "run with DJANGO_ENV=production (HTTPS settings follow); behind a TLS proxy set SECURE_PROXY_SSL_HEADER",
        )
    return Item("https", PASS, "HTTPS redirect, secure cookies and HSTS for one year")


def _database() -> Item:
    engine = settings.DATABASES["default"]["ENGINE"]
    if engine.endswith("sqlite3"):
        return Item("database", FAIL, "SQLite: one machine, no concurrent writers", "set DATABASE_URL=postgres://...")
    return Item(
        "database", PASS, f"{engine.rsplit('.', 1)[-1]} at {settings.DATABASES['default'].get('HOST') or 'socket'}"
    )


def _cache() -> Item:
    backend = settings.CACHES["default"]["BACKEND"]
    if backend.endswith(("locmem.LocMemCache", "dummy.DummyCache")):
        return Item("cache", FAIL, "the cache is not shared between processes", "set REDIS_URL=redis://...")
    if backend.endswith("filebased.FileBasedCache"):
        return Item(
            "cache", WARN, "file cache: shared on this machine only", "set REDIS_URL=redis://... for several machines"
        )
    return Item("cache", PASS, "Redis, shared by every process")


def _broker() -> Item:
    scheme = urlsplit(settings.CELERY_BROKER_URL).scheme
    if scheme == "filesystem":
        return Item(
            "broker",
            FAIL,
            "filesystem queue: workers on this machine only",
            "set CELERY_BROKER_URL=amqp://... or redis://",
        )
    return Item("broker", PASS, f"{scheme} broker at {urlsplit(settings.CELERY_BROKER_URL).hostname}")


def _sentry() -> Item:
    if settings.SENTRY_DSN:
        return Item("sentry", PASS, f"Sentry reports errors (environment {settings.SENTRY_ENVIRONMENT})")
    return Item("sentry", WARN, "errors are only logged", "set SENTRY_DSN to report errors to Sentry")


def _email() -> Item:
    backend = settings.EMAIL_BACKEND.rsplit(".", 2)[-2] if "." in settings.EMAIL_BACKEND else settings.EMAIL_BACKEND
    if backend in {"console", "locmem", "dummy", "filebased"}:
        return Item("email", FAIL, f"e-mail goes to the {backend} backend, not out", "set EMAIL_URL=smtp+tls://...")
    return Item("email", PASS, f"e-mail through {settings.EMAIL_HOST}:{settings.EMAIL_PORT}")


# (app label, item function) in the order the apps registered them: the configuration here, then
# what the apps hold (alert channels in monitoring, backup targets in backups).
_REGISTRY: list[tuple[str, Callable[[], Item]]] = []


def register_items(app_label: str, *items: Callable[[], Item]) -> None:
    """An app's readiness items; also reported by ``check --deploy`` as that app's system check."""
    from django.core import checks

    from controlplane.checks import app_check

    known = {item for _, item in _REGISTRY}
    _REGISTRY.extend((app_label, item) for item in items if item not in known)
    checks.register(app_check(app_label), app_label, deploy=True)


def readiness_items(app_label: str | None = None) -> list[Item]:
    return [item() for label, item in _REGISTRY if app_label is None or label == app_label]


def unreadable(name: str, what: str, exc: Exception) -> Item:
    """An item whose rows could not be read (the database is down or not migrated)."""
    reason = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else type(exc).__name__
    return Item(
        name,
        WARN,
        f"could not read the {what}: {reason}",
        "check that the database answers (DATABASE_URL) and run manage.py migrate",
    )


CONFIGURATION = [
    _environment, _secret_key, _debug, _allowed_hosts, _https, _database, _cache, _broker, _sentry, _email,
]  # fmt: skip


def overall(items: list[Item]) -> str:
    statuses = {item.status for item in items}
    return FAIL if FAIL in statuses else WARN if WARN in statuses else PASS


def deployment_info() -> dict[str, object]:
    """What is deployed and which services it uses, with no secret (hosts and kinds only)."""
    db = settings.DATABASES["default"]
    cache = settings.CACHES["default"]
    broker = urlsplit(settings.CELERY_BROKER_URL)
    email_backend = settings.EMAIL_BACKEND.rsplit(".", 2)[-2]
    return {
        "version": settings.CONTROLPLANE_RELEASE,
        "environment": settings.DJANGO_ENV,
        "services": {
            "database": {"engine": db["ENGINE"].rsplit(".", 1)[-1], "host": db.get("HOST") or None},
            "cache": {
                "backend": cache["BACKEND"].rsplit(".", 1)[-1],
                "host": urlsplit(cache["LOCATION"]).hostname if "redis" in cache["BACKEND"] else None,
            },
            "broker": {"transport": broker.scheme, "host": broker.hostname if broker.scheme != "filesystem" else None},
            "sentry": {"configured": bool(settings.SENTRY_DSN), "environment": settings.SENTRY_ENVIRONMENT},
            "email": {"backend": email_backend, "host": settings.EMAIL_HOST if email_backend == "smtp" else None},
        },
    }
