"""Settings of the control plane: every value comes from the environment (see .env.example).

The embedded defaults need no server: SQLite, a file-based cache and kombu's filesystem broker, all
under ``CONTROLPLANE_VAR_DIR``. ``DATABASE_URL``, ``REDIS_URL`` and ``CELERY_BROKER_URL`` move each part
to a real server. A bad value stops the process with one line that names the variable.
"""

from __future__ import annotations

import os
import secrets
import warnings
from collections.abc import Iterator, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, urlsplit

import environ

BASE_DIR = Path(__file__).resolve().parent.parent


def config_error(variable: str, problem: str) -> SystemExit:
    """One readable line naming the variable, and a non-zero exit, instead of a traceback."""
    return SystemExit(f"controlplane: configuration error: {variable}: {problem}")


class _SetValues(Mapping):
    """The process environment without its empty values: ``NAME=`` (as .env.example lists every
    variable) means the same as not setting NAME, its default."""

    def __getitem__(self, key: str) -> str:
        value = os.environ[key]
        if not value.strip():
            raise KeyError(key)
        return value

    def __iter__(self) -> Iterator[str]:
        return (key for key, value in os.environ.items() if value.strip())

    def __len__(self) -> int:
        return sum(1 for _ in self)


_env_file = BASE_DIR / ".env"
if _env_file.is_file():
    environ.Env.read_env(_env_file)
env = environ.Env()
env.ENVIRON = _SetValues()


def _bool(name: str, default: bool) -> bool:
    raw = env.str(name, default="").strip().lower()
    if raw == "":
        return default
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off"}:
        return False
    raise config_error(name, f"expected true or false, got {raw!r}")


def _int(name: str, default: int, *, minimum: int = 0) -> int:
    raw = env.str(name, default="").strip()
    if raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise config_error(name, f"expected a whole number, got {raw!r}") from None
    if value < minimum:
        raise config_error(name, f"must be at least {minimum}, got {value}")
    return value


def _list(name: str, default: list[str]) -> list[str]:
    raw = env.str(name, default="")
    if not raw.strip():
        return list(default)
    return [item.strip() for item in raw.split(",") if item.strip()]


# --- Environment and security -------------------------------------------------------------------

DJANGO_ENV = env.str("DJANGO_ENV", default="development").strip().lower()
if DJANGO_ENV not in {"development", "production"}:
    raise config_error("DJANGO_ENV", f"must be 'development' or 'production', got {DJANGO_ENV!r}")
PRODUCTION = DJANGO_ENV == "production"

VAR_DIR = Path(env.str("CONTROLPLANE_VAR_DIR", default="var"))
if not VAR_DIR.is_absolute():
    VAR_DIR = BASE_DIR / VAR_DIR
try:
    VAR_DIR.mkdir(parents=True, exist_ok=True)
except OSError as exc:
    raise config_error("CONTROLPLANE_VAR_DIR", f"cannot create {VAR_DIR}: {exc.strerror}") from None

DEBUG = _bool("DEBUG", False)

_INSECURE_KEY_PREFIX = "django-insecure"
SECRET_KEY = env.str("SECRET_KEY", default="")
if PRODUCTION:
    if not SECRET_KEY:
        raise config_error("SECRET_KEY", "must be set in production (50 or more random characters)")
    if len(SECRET_KEY) < 50 or SECRET_KEY.startswith(_INSECURE_KEY_PREFIX) or len(set(SECRET_KEY)) < 5:
        raise config_error("SECRET_KEY", "is too short or a default; use 50 or more random characters")
    if DEBUG:
        raise config_error("DEBUG", "must be off in production")
elif not SECRET_KEY:
    # Development: a random key kept under var/ so sessions survive restarts and no key is shared.
    _key_file = VAR_DIR / "secret_key"
    if not _key_file.exists():
        _key_file.touch(mode=0o600)
        _key_file.write_text(secrets.token_urlsafe(64))
    SECRET_KEY = _key_file.read_text().strip()

ALLOWED_HOSTS = _list("ALLOWED_HOSTS", [] if PRODUCTION else ["127.0.0.1", "localhost", "[::1]"])
if PRODUCTION and not ALLOWED_HOSTS:
    raise config_error("ALLOWED_HOSTS", "must name the host(s) the control plane is served as in production")
CSRF_TRUSTED_ORIGINS = _list("CSRF_TRUSTED_ORIGINS", [])
# The product's web origins whose pages may call the frontend API (/api/frontend) from the browser
# (CORS); "*" allows any. In development, Next.js' dev server.
FLAGS_FRONTEND_ORIGINS = _list(
    "FLAGS_FRONTEND_ORIGINS", [] if PRODUCTION else ["http://localhost:3000", "http://127.0.0.1:3000"]
)

# HTTPS and browser protections: on by default in production.
SECURE_SSL_REDIRECT = _bool("SECURE_SSL_REDIRECT", PRODUCTION)
SECURE_REDIRECT_EXEMPT = [r"^health/"]  # load balancers probe over plain HTTP
_proxy_ssl_header = env.str("SECURE_PROXY_SSL_HEADER", default="")
if _proxy_ssl_header:
    SECURE_PROXY_SSL_HEADER = ("HTTP_" + _proxy_ssl_header.upper().replace("-", "_").removeprefix("HTTP_"), "https")
SESSION_COOKIE_SECURE = _bool("SESSION_COOKIE_SECURE", PRODUCTION)
CSRF_COOKIE_SECURE = _bool("CSRF_COOKIE_SECURE", PRODUCTION)
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = True
SECURE_HSTS_SECONDS = _int("SECURE_HSTS_SECONDS", 31_536_000 if PRODUCTION else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
# Preloading commits the whole registrable domain to HTTPS in browsers; an operator opts in.
SECURE_HSTS_PRELOAD = _bool("SECURE_HSTS_PRELOAD", False)
SILENCED_SYSTEM_CHECKS = [] if SECURE_HSTS_PRELOAD else ["security.W021"]
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# Every page loads only what the control plane serves; no inline script or style.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
)

# --- Applications ---------------------------------------------------------------------------------

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "waffle",
    "axes",
    "django_htmx",
    "ninja",  # its Swagger UI page and static files, for /api/deployment/docs
    "controlplane",
    "flags",
    "monitoring",
    "alerting",
    "backups",
    "deployments",
]

MIDDLEWARE = [
    "controlplane.context.RequestContextMiddleware",
    "monitoring.request_metrics.RequestMetricsMiddleware",  # times every request, the probes included
    "monitoring.health.HealthEndpointsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "controlplane.middleware.ContentSecurityPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.auth.middleware.LoginRequiredMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "waffle.middleware.WaffleMiddleware",
    # Last, as django-axes asks: it turns a lockout raised during login into its 429 page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "controlplane.urls"
WSGI_APPLICATION = "controlplane.wsgi.application"
ASGI_APPLICATION = "controlplane.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]


def _url_parts(name: str, value: str) -> SplitResult:
    """The parts of a URL setting; a malformed one (a bad port, an unclosed [) stops with one line."""
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError as exc:
        # Never the parser's own text: it quotes parts of the URL, a password among them.
        reason = "an unclosed [ in the host" if "IPv6" in str(exc) else "the port is not a number"
        raise config_error(
            name, f"malformed URL: {reason} (percent-encode @ : / ? # in a user name or password)"
        ) from None
    if parts.fragment or value.endswith("#"):
        raise config_error(name, "malformed URL: a # in it (percent-encode it as %23 in a password)")
    return parts


# --- Database -------------------------------------------------------------------------------------

_SUPPORTED_DB_ENGINES = {"django.db.backends.postgresql", "django.db.backends.sqlite3"}
_database_url = env.str("DATABASE_URL", default="")
if _database_url:
    _url_parts("DATABASE_URL", _database_url)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # django-environ warns on unknown schemes; we refuse them below
            _db = environ.Env.db_url_config(_database_url)
    except Exception:  # django-environ raises several types; their text may quote the password
        raise config_error(
            "DATABASE_URL", "not a database URL (percent-encode @ : / ? # in a user name or password)"
        ) from None
    if _db.get("ENGINE") not in _SUPPORTED_DB_ENGINES:
        raise config_error(
            "DATABASE_URL",
            "must start with postgres:// (or postgresql://) or sqlite:///, e.g. postgres://user@host:5432/db",
        )
    if not _db.get("NAME"):
        raise config_error("DATABASE_URL", "names no database (the path after the host)")
    if _db["ENGINE"] == "django.db.backends.sqlite3" and _db["NAME"] == ":memory:":
        raise config_error(
            "DATABASE_URL",
            "an in-memory SQLite database is not shared by web, worker and beat: give a file, sqlite:////path/db.sqlite3",
        )
else:
    _db = {"ENGINE": "django.db.backends.sqlite3", "NAME": str(VAR_DIR / "controlplane.sqlite3")}

if _db["ENGINE"] == "django.db.backends.sqlite3":
    # web, worker and beat share one SQLite file: WAL lets readers run beside the writer, and
    # IMMEDIATE transactions take the write lock up front instead of failing on upgrade.
    _db["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
    }
    # A file, not memory, so that a worker started by a test sees the test database.
    _db["TEST"] = {"NAME": str(VAR_DIR / "test.sqlite3")}
else:
    _db["CONN_MAX_AGE"] = _int("DATABASE_CONN_MAX_AGE", 60)
    _db["CONN_HEALTH_CHECKS"] = True
    _connect_timeout = _int("DATABASE_CONNECT_TIMEOUT", 5, minimum=1)
    _db.setdefault("OPTIONS", {}).setdefault("connect_timeout", _connect_timeout)
    # At most this many connections per process, shared by its threads (psycopg's pool); 0: no pool, each
    # thread keeps its own connection for DATABASE_CONN_MAX_AGE. Off by default: a sync gunicorn worker serves
    # one request at a time, which a kept connection serves as well, and the pool meets faults more slowly
    # (tests/controlplane/test_database_pool.py, measured: after a database restart the first request waits
    # 1.0-1.2 s, psycopg_pool's back-off after a failed check, against 0.05 s; a refusing database is a 503
    # after 2.0 s against 0.18 s; back in 1.1 s against 0.07 s). Django checks each pooled connection as it
    # leaves the pool (CONN_HEALTH_CHECKS), so no request gets one that the database dropped.
    _pool_size = _int("DATABASE_POOL_SIZE", 0)
    if _pool_size:
        if env.str("DATABASE_CONN_MAX_AGE", default="").strip() not in {"", "0"}:
            raise config_error(
                "DATABASE_CONN_MAX_AGE", "must be 0 or empty with DATABASE_POOL_SIZE (the pool keeps connections)"
            )
        _db["CONN_MAX_AGE"] = 0  # Django refuses a pool beside persistent connections
        # One connection kept warm, more opened on demand; a thread waits for a free one at most as long
        # as for a new connection.
        _db["OPTIONS"]["pool"] = {"min_size": 1, "max_size": _pool_size, "timeout": float(_connect_timeout)}
DATABASES = {"default": _db}
# As configured, for messages (redacted) that say which server did not answer; empty: embedded SQLite.
DATABASE_URL = _database_url
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Cache ----------------------------------------------------------------------------------------

REDIS_URL = env.str("REDIS_URL", default="")
CACHE_KEY_PREFIX = env.str("CACHE_KEY_PREFIX", default="cp")
# Seconds a Redis call (connect, or one command) may take: Redis answers in a millisecond, and a short
# limit keeps a Redis that accepts connections and never answers from holding requests up.
try:
    REDIS_SOCKET_TIMEOUT = float(env.str("REDIS_SOCKET_TIMEOUT", default="0.25") or 0.25)
except ValueError:
    raise config_error("REDIS_SOCKET_TIMEOUT", "expected seconds, e.g. 0.25") from None
if not REDIS_SOCKET_TIMEOUT > 0:
    raise config_error("REDIS_SOCKET_TIMEOUT", "must be more than 0 seconds")
if REDIS_URL:
    if _url_parts("REDIS_URL", REDIS_URL).scheme not in {"redis", "rediss", "unix"}:
        raise config_error("REDIS_URL", "must start with redis://, rediss:// or unix://")
    CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": CACHE_KEY_PREFIX,
            "OPTIONS": {
                # A stopped or hanging Redis must fail fast so that what needs it degrades and nothing else
                # waits. redis-py makes one try through django-redis's pool (no retry): one timeout per call.
                "SOCKET_CONNECT_TIMEOUT": REDIS_SOCKET_TIMEOUT,
                "SOCKET_TIMEOUT": REDIS_SOCKET_TIMEOUT,
            },
        }
    }
else:
    # Shared by every local process (web workers, Celery worker, beat), unlike local memory.
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(VAR_DIR / "cache"),
            "KEY_PREFIX": CACHE_KEY_PREFIX,
        }
    }

# --- Celery ---------------------------------------------------------------------------------------

_SUPPORTED_BROKERS = {"filesystem", "redis", "rediss", "amqp", "amqps", "pyamqp"}
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="filesystem://localhost//")
_broker_scheme = _url_parts("CELERY_BROKER_URL", CELERY_BROKER_URL).scheme
if _broker_scheme not in _SUPPORTED_BROKERS:
    raise config_error(
        "CELERY_BROKER_URL", "must be filesystem://, redis://host:6379/N or amqp://user:password@host:5672//"
    )
if _broker_scheme == "filesystem":
    _broker_dir = VAR_DIR / "broker"
    for _sub in ("queue", "processed", "control"):
        (_broker_dir / _sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "processed_folder": str(_broker_dir / "processed"),
        "control_folder": str(_broker_dir / "control"),  # fanout exchanges (worker remote control)
        "store_processed": False,
    }
CELERY_BROKER_CONNECTION_TIMEOUT = _int("CELERY_BROKER_CONNECTION_TIMEOUT", 4, minimum=1)
# Sending a task (after a request's commit) gives up after a few quick tries, so a broker that is down
# costs a request about a second (refused) or one connection timeout (no answer), not a hang; what could
# not be sent is recorded and sent again by the periodic tasks.
CELERY_TASK_PUBLISH_RETRY_POLICY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.2}
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True  # tasks are idempotent; a worker that dies mid-task leaves it queued
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TIME_LIMIT = _int("CELERY_TASK_TIME_LIMIT", 3600, minimum=1)
CELERY_TASK_SOFT_TIME_LIMIT = CELERY_TASK_TIME_LIMIT - 30 if CELERY_TASK_TIME_LIMIT > 60 else None
CELERY_WORKER_CONCURRENCY = _int("CELERY_WORKER_CONCURRENCY", 2, minimum=1)
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
# The queue tasks go to and workers read; installations sharing one broker each use their own.
CELERY_TASK_DEFAULT_QUEUE = env.str("CELERY_QUEUE", default="celery")
CELERY_TIMEZONE = "UTC"

# --- Backups -------------------------------------------------------------------------------------

BACKUP_DIR = Path(env.str("BACKUP_DIR", default=str(VAR_DIR / "backups")))
if not BACKUP_DIR.is_absolute():
    BACKUP_DIR = BASE_DIR / BACKUP_DIR
# Dumps are written here under a temporary name first; on the same file system as BACKUP_DIR the
# finished file is renamed into place.
BACKUP_TMP_DIR = Path(env.str("BACKUP_TMP_DIR", default=str(BACKUP_DIR / ".partial")))
if not BACKUP_TMP_DIR.is_absolute():
    BACKUP_TMP_DIR = BASE_DIR / BACKUP_TMP_DIR
BACKUP_SCRATCH_DATABASE_URL = env.str("BACKUP_SCRATCH_DATABASE_URL", default="")
if BACKUP_SCRATCH_DATABASE_URL and _url_parts(
    "BACKUP_SCRATCH_DATABASE_URL", BACKUP_SCRATCH_DATABASE_URL
).scheme not in {"postgres", "postgresql"}:
    raise config_error("BACKUP_SCRATCH_DATABASE_URL", "must start with postgres:// (a server to verify backups on)")
BACKUP_TIMEOUT_SECONDS = _int("BACKUP_TIMEOUT_SECONDS", 3 * 3600, minimum=10)
# A running backup or verification stamps its row this often; one silent for BACKUP_HEARTBEAT_TIMEOUT_SECONDS
# lost its worker (killed, or cut from this database) and no longer holds the target.
BACKUP_HEARTBEAT_SECONDS = _int("BACKUP_HEARTBEAT_SECONDS", 15, minimum=1)
BACKUP_HEARTBEAT_TIMEOUT_SECONDS = _int("BACKUP_HEARTBEAT_TIMEOUT_SECONDS", 120, minimum=3)
BACKUP_SCHEDULER_INTERVAL_SECONDS = _int("BACKUP_SCHEDULER_INTERVAL_SECONDS", 300, minimum=10)
# A running backup, verification or drill writes how far it is at most this often (with the heartbeat,
# only when it moved); the Backups page and the commands' progress line show it.
try:
    BACKUP_PROGRESS_SECONDS = float(env.str("BACKUP_PROGRESS_SECONDS", default="1") or 1)
except ValueError:
    raise config_error("BACKUP_PROGRESS_SECONDS", "expected seconds, e.g. 1") from None
if BACKUP_PROGRESS_SECONDS <= 0:
    raise config_error("BACKUP_PROGRESS_SECONDS", "must be more than 0")
PG_BIN_DIR = env.str("PG_BIN_DIR", default="")
# Parallel jobs of pg_restore and pg_amcheck when verifying (the RTO estimate is measured with them).
BACKUP_RESTORE_JOBS = _int("BACKUP_RESTORE_JOBS", min(4, os.cpu_count() or 1), minimum=1)
# Encryption at rest with age: backups are encrypted to these public keys (age1… or ssh-…); the identity (secret
# key) that decrypts them is read from BACKUP_AGE_IDENTITY_FILE, only to verify or restore.
BACKUP_AGE_RECIPIENTS = _list("BACKUP_AGE_RECIPIENTS", [])
for _position, _recipient in enumerate(BACKUP_AGE_RECIPIENTS, start=1):
    if _recipient.upper().startswith("AGE-SECRET-KEY-") or "PRIVATE KEY" in _recipient:
        raise config_error("BACKUP_AGE_RECIPIENTS", f"item {_position} is a secret key: give only public keys (age1…)")
    if not _recipient.startswith(("age1", "ssh-")):
        raise config_error("BACKUP_AGE_RECIPIENTS", f"item {_position} is not an age public key (age1…) or ssh- key")
BACKUP_AGE_IDENTITY_FILE = env.str("BACKUP_AGE_IDENTITY_FILE", default="")
# Off-site copies: an S3-compatible bucket, the storage "offsite" that targets name in their copy_storages.
BACKUP_S3_BUCKET = env.str("BACKUP_S3_BUCKET", default="")
BACKUP_S3_PREFIX = env.str("BACKUP_S3_PREFIX", default="backups").strip("/")
BACKUP_S3_ENDPOINT_URL = env.str("BACKUP_S3_ENDPOINT_URL", default="")  # empty: AWS itself
if BACKUP_S3_ENDPOINT_URL and _url_parts("BACKUP_S3_ENDPOINT_URL", BACKUP_S3_ENDPOINT_URL).scheme not in {
    "http",
    "https",
}:
    raise config_error("BACKUP_S3_ENDPOINT_URL", "must start with https:// (or http:// for a local server)")
BACKUP_S3_REGION = env.str("BACKUP_S3_REGION", default="")
# Empty: boto3 finds credentials itself (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, a profile, an instance role).
BACKUP_S3_ACCESS_KEY_ID = env.str("BACKUP_S3_ACCESS_KEY_ID", default="")
BACKUP_S3_SECRET_ACCESS_KEY = env.str("BACKUP_S3_SECRET_ACCESS_KEY", default="")
# A request to the bucket that gets no answer for this long fails (a hung server); the copy is retried later.
BACKUP_S3_TIMEOUT_SECONDS = _int("BACKUP_S3_TIMEOUT_SECONDS", 60, minimum=1)
# Checksums boto3 sends with each upload: when_supported (boto3's default: a CRC per part, which the bucket
# checks) or when_required (only where an operation demands one), for an S3-compatible service that refuses
# the newer checksum headers. Either way a copy counts only once read back with the backup's sha256.
BACKUP_S3_CHECKSUMS = env.str("BACKUP_S3_CHECKSUMS", default="when_supported")
if BACKUP_S3_CHECKSUMS not in {"when_supported", "when_required"}:
    raise config_error("BACKUP_S3_CHECKSUMS", "when_supported or when_required")
# Minutes before a failed copy is tried again, doubled after each failure (at most a day).
BACKUP_COPY_RETRY_MINUTES = _int("BACKUP_COPY_RETRY_MINUTES", 15, minimum=1)

# --- Deployments ---------------------------------------------------------------------------------

# Names of environment variables that pipeline steps may use as ${NAME} (deploy hook tokens, say);
# their values are redacted from every step output and log line.
DEPLOY_SECRETS = _list("DEPLOY_SECRETS", [])
DEPLOY_HEARTBEAT_SECONDS = _int("DEPLOY_HEARTBEAT_SECONDS", 2, minimum=1)
# A running deployment whose heartbeat is older than this is taken as lost and rolled back.
DEPLOY_HEARTBEAT_TIMEOUT_SECONDS = _int("DEPLOY_HEARTBEAT_TIMEOUT_SECONDS", 30, minimum=5)
# A queued deployment no worker has picked up within this is cancelled (it holds the lock).
DEPLOY_QUEUE_TIMEOUT_SECONDS = _int("DEPLOY_QUEUE_TIMEOUT_SECONDS", 600, minimum=10)
# The reaper sends a queued deployment's task again when the broker never took it, or when no worker
# took it this long after it was sent (a lost message); a duplicate does nothing.
DEPLOY_DISPATCH_RETRY_SECONDS = 60
DEPLOY_REAPER_INTERVAL_SECONDS = _int("DEPLOY_REAPER_INTERVAL_SECONDS", 15, minimum=1)
DEPLOY_OUTPUT_FLUSH_SECONDS = 0.5  # step output reaches the database (and the page) this often
DEPLOY_STEP_OUTPUT_LIMIT = _int("DEPLOY_STEP_OUTPUT_LIMIT", 1_000_000, minimum=1000)  # characters, the tail kept

# Every periodic task, in one place.
HEARTBEAT_INTERVAL_SECONDS = _int("HEARTBEAT_INTERVAL_SECONDS", 30, minimum=1)
HEALTH_CHECK_INTERVAL_SECONDS = _int("HEALTH_CHECK_INTERVAL_SECONDS", 60, minimum=1)
# Pings a job monitor's URL takes per second (Redis counts them; without it, each web process); more are 429.
JOB_PING_RATE_PER_SECOND = _int("JOB_PING_RATE_PER_SECOND", 5, minimum=1)
# Pings are buffered and each web process applies them at most this often (a lone ping at once); 0: in
# the request that brought them (monitoring/job_monitors.py).
JOB_PING_FLUSH_SECONDS = _int("JOB_PING_FLUSH_SECONDS", 1)
# Not beat's: each worker's own timer records that the worker is alive (the celery-workers check reads
# it on every broker) and, while beat is silent, runs the scheduled checks itself (monitoring/watchdog.py).
WORKER_HEARTBEAT_SECONDS = _int("WORKER_HEARTBEAT_SECONDS", 15, minimum=1)
CELERY_BEAT_SCHEDULE = {
    "heartbeat": {
        "task": "monitoring.tasks.heartbeat",
        "schedule": float(HEARTBEAT_INTERVAL_SECONDS),
        # A heartbeat that waited in the queue longer than its interval says nothing fresh.
        "options": {"expires": float(HEARTBEAT_INTERVAL_SECONDS)},
    },
    "health-checks": {
        "task": "monitoring.tasks.run_scheduled_checks",
        "schedule": float(HEALTH_CHECK_INTERVAL_SECONDS),
        "options": {"expires": HEALTH_CHECK_INTERVAL_SECONDS * 0.9},
    },
    "retention": {
        "task": "controlplane.tasks.prune_old_rows",
        "schedule": 24 * 3600.0,
    },
    # Job monitors whose ping is overdue turn late, then down (their schedules are in the database).
    "job-monitors": {
        "task": "monitoring.tasks.sweep_job_monitors",
        "schedule": 60.0,
        "options": {"expires": 55.0},
    },
    # Each service's scrape sources keep their own interval (in the database); this looks for what is due.
    "scrape-sources": {
        "task": "monitoring.tasks.scrape_sources",
        "schedule": 5.0,
        "options": {"expires": 4.0},
    },
    "dashboard-charts": {
        "task": "monitoring.tasks.refresh_dashboard_charts",
        "schedule": 60.0,
        "options": {"expires": 55.0},
    },
    "deployments-reaper": {
        "task": "deployments.tasks.reap",
        "schedule": float(DEPLOY_REAPER_INTERVAL_SECONDS),
        "options": {"expires": DEPLOY_REAPER_INTERVAL_SECONDS * 0.9},
    },
    # Scheduled flag changes (in the database) are applied within 30 s of their time.
    "flag-schedules": {
        "task": "flags.tasks.apply_scheduled_changes",
        "schedule": 30.0,
        "options": {"expires": 25.0},
    },
    # Each target's own schedule is kept in the database; this looks for what is due.
    "backups-due": {
        "task": "backups.tasks.run_due",
        "schedule": float(BACKUP_SCHEDULER_INTERVAL_SECONDS),
        "options": {"expires": BACKUP_SCHEDULER_INTERVAL_SECONDS * 0.9},
    },
    # Each recovery plan's drill schedule is kept on the plan (deployments); this looks for what is due.
    "backups-drills-due": {
        "task": "backups.tasks.run_due_drills",
        "schedule": float(BACKUP_SCHEDULER_INTERVAL_SECONDS),
        "options": {"expires": BACKUP_SCHEDULER_INTERVAL_SECONDS * 0.9},
    },
}

# --- Authentication and sessions ----------------------------------------------------------------

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
AUTHENTICATION_BACKENDS = [
    # First: refuses a login while the user-and-address pair is locked out.
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = _int("LOGIN_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = timedelta(minutes=_int("LOGIN_LOCKOUT_MINUTES", 15, minimum=1))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
# Proxies in front that append to X-Forwarded-For; 0 ignores the header (controlplane/client_address.py).
TRUSTED_PROXY_COUNT = _int("TRUSTED_PROXY_COUNT", 0)
AXES_CLIENT_IP_CALLABLE = "controlplane.client_address.client_ip"
AXES_VERBOSE = False
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "monitoring:dashboard"
LOGOUT_REDIRECT_URL = "login"
# Seconds a sign-in lasts (default 12 hours; Django's own is 14 days, long for a console that deploys).
# Sessions are kept in the database, so a password change ends the user's other sessions at their next request.
SESSION_COOKIE_AGE = _int("SESSION_COOKIE_AGE", 12 * 60 * 60, minimum=60)
CONTROLPLANE_ADMIN_USER = env.str("CONTROLPLANE_ADMIN_USER", default="admin")
# Only read by ensure_operator when it first creates the account; never a fixed default.
CONTROLPLANE_ADMIN_PASSWORD = env.str("CONTROLPLANE_ADMIN_PASSWORD", default="")

# Seconds between a process's looks at the shared versions of its in-process copies (flags,
# tokens): a change reaches every process within this time.
try:
    CONTROLPLANE_RELOAD_INTERVAL = float(env.str("CONTROLPLANE_RELOAD_INTERVAL", default="0.5") or 0.5)
except ValueError:
    raise config_error("CONTROLPLANE_RELOAD_INTERVAL", "expected seconds, e.g. 0.5") from None
# With the shared cache down, each process reads flags and tokens from the database this often instead.
CONTROLPLANE_FAULT_RELOAD_SECONDS = 5.0

# Health checks: each check's timeout, the deadline of a whole report, what counts as slow, and
# the free-disk thresholds (percent) under which the disk check warns and fails.
try:
    HEALTH_CHECK_TIMEOUT = float(env.str("HEALTH_CHECK_TIMEOUT", default="2") or 2)
    HEALTH_DEADLINE = float(env.str("HEALTH_DEADLINE", default="3") or 3)
except ValueError:
    raise config_error("HEALTH_CHECK_TIMEOUT", "expected seconds, e.g. 2") from None
HEALTH_SLOW_MS = _int("HEALTH_SLOW_MS", 200, minimum=1)
DISK_FREE_WARN_PERCENT = _int("DISK_FREE_WARN_PERCENT", 15)
DISK_FREE_FAIL_PERCENT = _int("DISK_FREE_FAIL_PERCENT", 5)
# Retention in days of every table that grows (0 keeps everything); beat prunes daily in batches.
HEALTH_METRICS_RETENTION_DAYS = _int("HEALTH_METRICS_RETENTION_DAYS", 30)
REQUEST_ROLLUPS_RETENTION_DAYS = _int("REQUEST_ROLLUPS_RETENTION_DAYS", 30)
# Services' per-minute rollups (per route) are kept a week and a day; their hourly sums, which 7- and
# 30-day uptime and 28-day SLOs read, 400 days; the values Prometheus sources evaluated, 8 days.
SERVICE_MINUTE_RETENTION_DAYS = _int("SERVICE_MINUTE_RETENTION_DAYS", 8)
SERVICE_HOUR_RETENTION_DAYS = _int("SERVICE_HOUR_RETENTION_DAYS", 400)
SIGNAL_SAMPLE_RETENTION_DAYS = _int("SIGNAL_SAMPLE_RETENTION_DAYS", 8)
DELIVERY_RETENTION_DAYS = _int("DELIVERY_RETENTION_DAYS", 90)
RESOLVED_ALERT_RETENTION_DAYS = _int("RESOLVED_ALERT_RETENTION_DAYS", 180)
DEPLOYMENT_LOG_RETENTION_DAYS = _int("DEPLOYMENT_LOG_RETENTION_DAYS", 180)
AUDIT_RETENTION_DAYS = _int("AUDIT_RETENTION_DAYS", 0)
# Scheduled flag changes once applied, skipped or cancelled (pending ones always stay).
FLAG_SCHEDULE_RETENTION_DAYS = _int("FLAG_SCHEDULE_RETENTION_DAYS", 90)
# Finished restore drills (each plan's newest passed drill always stays: readiness reads it).
BACKUP_DRILL_RETENTION_DAYS = _int("BACKUP_DRILL_RETENTION_DAYS", 365)
# Flag usage reported by the SDKs (hourly counts), and SDK instances not heard from.
FLAG_USAGE_RETENTION_DAYS = _int("FLAG_USAGE_RETENTION_DAYS", 90)
SDK_INSTANCE_RETENTION_DAYS = _int("SDK_INSTANCE_RETENTION_DAYS", 30)
# Seconds between each process's additions of OFREP's evaluation counts to the hourly usage (0: only at exit
# or when a test calls flags.usage.flush).
FLAG_USAGE_FLUSH_SECONDS = _int("FLAG_USAGE_FLUSH_SECONDS", 10)
# A flag is stale (ready to remove from the code) when not evaluated for this many days, or on for everyone
# in every environment, unchanged, for this many.
FLAG_STALE_UNUSED_DAYS = _int("FLAG_STALE_UNUSED_DAYS", 30, minimum=1)
FLAG_STALE_FULLY_ON_DAYS = _int("FLAG_STALE_FULLY_ON_DAYS", 30, minimum=1)
# Request metrics: a query this slow (ms) counts as slow; each process adds its sums to the shared
# per-minute rollups this often (seconds; 0: only when asked, as the tests do).
SLOW_QUERY_MS = _int("SLOW_QUERY_MS", 100, minimum=1)
REQUEST_METRICS_FLUSH_SECONDS = _int("REQUEST_METRICS_FLUSH_SECONDS", 10)
# prometheus-client's multiprocess files; read when prometheus_client is first imported, so set here.
PROMETHEUS_MULTIPROC_DIR = env.str("PROMETHEUS_MULTIPROC_DIR", default=str(VAR_DIR / "prometheus"))
os.environ["PROMETHEUS_MULTIPROC_DIR"] = PROMETHEUS_MULTIPROC_DIR
Path(PROMETHEUS_MULTIPROC_DIR).mkdir(parents=True, exist_ok=True)

# --- Feature flags (django-waffle with the control plane's own flag model) ------------------------

WAFFLE_FLAG_MODEL = "flags.Flag"
WAFFLE_CREATE_MISSING_FLAGS = False
WAFFLE_FLAG_DEFAULT = False

# --- Internationalisation, static files -----------------------------------------------------------

LANGUAGE_CODE = "en-us"
TIME_ZONE = env.str("TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STATICFILES_DIRS = [BASE_DIR / "static"]
# Outside production whitenoise also serves the source files (runserver before any collectstatic);
# production serves only what collectstatic put in STATIC_ROOT.
WHITENOISE_USE_FINDERS = not PRODUCTION
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    # Hashed names from collectstatic's manifest; the plain name while there is no manifest yet.
    "staticfiles": {"BACKEND": "controlplane.staticfiles.ManifestStaticFilesStorage"},
    # Any Django storage works here (an S3 one from django-storages, say); files are never served.
    "backups": {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": str(BACKUP_DIR), "file_permissions_mode": 0o600, "directory_permissions_mode": 0o700},
    },
}


def s3_backup_storage(
    *,
    bucket: str,
    prefix: str,
    endpoint_url: str,
    region: str,
    access_key: str,
    secret_key: str,
    timeout: int,
    checksums: str = "when_supported",
) -> dict[str, Any]:
    """django-storages' S3 storage for off-site copies of backups (any S3-compatible service)."""
    from botocore.config import Config

    options: dict[str, Any] = {
        "bucket_name": bucket,
        "location": prefix,
        "file_overwrite": True,  # a copy tried again replaces what a failed attempt may have left
        "default_acl": None,
        # Few, bounded retries: a refusing or hung server fails the copy in minutes, and run_due tries it later.
        "client_config": Config(
            connect_timeout=min(timeout, 10),
            read_timeout=timeout,
            retries={"max_attempts": 2, "mode": "standard"},
            request_checksum_calculation=checksums,
            response_checksum_validation=checksums,
        ),
    }
    if endpoint_url:
        options["endpoint_url"] = endpoint_url
    if region:
        options["region_name"] = region
    if access_key:
        options["access_key"], options["secret_key"] = access_key, secret_key
    # django-storages' S3Storage, uploading a local file by its path (see backups/offsite.py).
    return {"BACKEND": "backups.offsite.OffsiteS3Storage", "OPTIONS": options}


if BACKUP_S3_BUCKET:
    STORAGES["offsite"] = s3_backup_storage(
        bucket=BACKUP_S3_BUCKET,
        prefix=BACKUP_S3_PREFIX,
        endpoint_url=BACKUP_S3_ENDPOINT_URL,
        region=BACKUP_S3_REGION,
        access_key=BACKUP_S3_ACCESS_KEY_ID,
        secret_key=BACKUP_S3_SECRET_ACCESS_KEY,
        timeout=BACKUP_S3_TIMEOUT_SECONDS,
        checksums=BACKUP_S3_CHECKSUMS,
    )

# --- Logging, errors, e-mail ---------------------------------------------------------------------

CONTROLPLANE_RELEASE = env.str("CONTROLPLANE_RELEASE", default="")

import logging as _logging  # noqa: E402 - the flags below belong with the logging configuration

# Every request logs a line: skip collecting what our lines never show (documented logging flags).
_logging.logThreads = False
_logging.logMultiprocessing = False
_logging.logProcesses = False
# No caller lookup (file, line, function) per record: no line of ours shows it, and it walks the stack
# (the logging HOWTO's "Optimization" section lists this switch).
_logging._srcfile = None

LOG_LEVEL = env.str("LOG_LEVEL", default="INFO").upper()
if LOG_LEVEL not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
    raise config_error("LOG_LEVEL", f"must be DEBUG, INFO, WARNING, ERROR or CRITICAL, got {LOG_LEVEL!r}")
LOG_FORMAT = env.str("LOG_FORMAT", default="json" if PRODUCTION else "text").strip().lower()
if LOG_FORMAT not in {"json", "text"}:
    raise config_error("LOG_FORMAT", f"must be json or text, got {LOG_FORMAT!r}")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "context": {"()": "controlplane.context.ContextFilter"},
        "one_line_sentry": {"()": "controlplane.sentry.OneLineSentryErrors"},
    },
    "formatters": {
        "json": {"()": "controlplane.logging.JsonFormatter"},
        "text": {"()": "controlplane.logging.TextFormatter"},
    },
    "handlers": {
        "stdout": {
            "class": "logging.StreamHandler",
            "stream": "ext://sys.stdout",
            "formatter": LOG_FORMAT,
            "filters": ["context"],
        },
    },
    "root": {"handlers": ["stdout"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "INFO"},
        # The retries of an HTTP client (Sentry's transport) are its own business; a delivery that
        # finally fails is the one line below.
        "urllib3.connectionpool": {"level": "ERROR"},
        # Failed Sentry deliveries: one line each, never a traceback (the request goes on).
        "sentry_sdk.errors": {
            "handlers": ["stdout"],
            "level": "WARNING",
            "propagate": False,
            "filters": ["one_line_sentry"],
        },
    },
}

SENTRY_DSN = env.str("SENTRY_DSN", default="")
SENTRY_ENVIRONMENT = env.str("SENTRY_ENVIRONMENT", default=DJANGO_ENV)
try:
    SENTRY_TRACES_SAMPLE_RATE = float(env.str("SENTRY_TRACES_SAMPLE_RATE", default="0") or 0)
except ValueError:
    raise config_error("SENTRY_TRACES_SAMPLE_RATE", "expected a number from 0 to 1") from None
if not 0 <= SENTRY_TRACES_SAMPLE_RATE <= 1:
    raise config_error("SENTRY_TRACES_SAMPLE_RATE", "expected a number from 0 to 1")
if SENTRY_DSN:
    _dsn = _url_parts("SENTRY_DSN", SENTRY_DSN)
    if _dsn.scheme not in {"http", "https"} or not _dsn.username or not _dsn.hostname:
        raise config_error("SENTRY_DSN", "expected https://<key>@<host>/<project>")
    from controlplane.sentry import init_sentry

    init_sentry(
        dsn=SENTRY_DSN,
        environment=SENTRY_ENVIRONMENT,
        release=CONTROLPLANE_RELEASE,
        traces_sample_rate=SENTRY_TRACES_SAMPLE_RATE,
    )

try:
    _email = environ.Env.email_url_config(env.str("EMAIL_URL", default="consolemail://"))
except Exception as exc:  # django-environ raises several types for malformed URLs
    raise config_error("EMAIL_URL", f"not an e-mail URL ({exc})") from None
if not _email.get("EMAIL_BACKEND"):
    raise config_error("EMAIL_URL", "expected smtp://, smtp+tls://, smtp+ssl:// or consolemail://")
EMAIL_BACKEND = _email["EMAIL_BACKEND"]
EMAIL_HOST = _email.get("EMAIL_HOST") or "localhost"
EMAIL_PORT = _email.get("EMAIL_PORT") or 25
EMAIL_HOST_USER = _email.get("EMAIL_HOST_USER") or ""
EMAIL_HOST_PASSWORD = _email.get("EMAIL_HOST_PASSWORD") or ""
EMAIL_USE_TLS = bool(_email.get("EMAIL_USE_TLS"))
EMAIL_USE_SSL = bool(_email.get("EMAIL_USE_SSL"))
EMAIL_TIMEOUT = 10
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="controlplane@localhost")
# The control plane's address as operators reach it; notifications link to it (an alert's recovery plan).
PUBLIC_URL = env.str("PUBLIC_URL", default="").strip().rstrip("/")
if PUBLIC_URL:
    _public = _url_parts("PUBLIC_URL", PUBLIC_URL)
    if _public.scheme not in ("http", "https") or not _public.hostname:
        raise config_error("PUBLIC_URL", "must be an http:// or https:// address with a host (https://ops.example.com)")
    if _public.query or _public.fragment:
        raise config_error("PUBLIC_URL", "takes no query or fragment (https://ops.example.com)")
SERVER_EMAIL = DEFAULT_FROM_EMAIL
