"""Fixtures shared by the whole suite: users of each role, real services, the browser."""

from __future__ import annotations

import functools
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from django.conf import settings
from django.core.management import call_command

from tests.factories import UserFactory

BASE_DIR = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"

# --- Real services ---------------------------------------------------------------------------------
#
# A test marked ``@pytest.mark.service("redis")`` uses a real server. When the suite itself runs on
# that server (REDIS_URL and friends are set) it gets the same URL; otherwise the machine's local
# server at its usual address. A server that does not answer turns the test into a skip with the reason.


def service_url(name: str) -> str:
    """The URL a test should use for the real server ``name``."""
    if name == "postgres":
        configured = os.environ.get("DATABASE_URL", "")
        if configured.startswith(("postgres://", "postgresql://")):
            return configured
        return os.environ.get("TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test")
    if name == "redis":
        return os.environ.get("REDIS_URL") or os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
    if name == "rabbitmq":
        configured = os.environ.get("CELERY_BROKER_URL", "")
        if configured.startswith(("amqp://", "amqps://", "pyamqp://")):
            return configured
        return os.environ.get("TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672//")
    raise ValueError(f"unknown service {name!r}")


@functools.cache
def _service_problem(name: str) -> str | None:
    """None when the server answers, else why not (probed once per session)."""
    url = service_url(name)
    where = urlsplit(url).hostname or "local socket"
    try:
        if name == "postgres":
            import psycopg

            psycopg.connect(url, connect_timeout=3).close()
        elif name == "redis":
            import redis

            redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2).ping()
        elif name == "rabbitmq":
            from kombu import Connection

            with Connection(url, connect_timeout=3) as conn:
                conn.ensure_connection(max_retries=1, timeout=3)
    except Exception as exc:
        return f"{name} at {where} does not answer: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
    return None


def pytest_runtest_setup(item: pytest.Item) -> None:
    for marker in item.iter_markers(name="service"):
        for name in marker.args:
            problem = _service_problem(name)
            if problem:
                pytest.skip(problem)
    if item.get_closest_marker("browser") and not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"{CHROMIUM} is missing: apt-get install chromium")


# --- Django ---------------------------------------------------------------------------------------


@pytest.fixture(scope="session", autouse=True)
def _collected_static() -> None:
    """Pages use the manifest storage, as in production: collect the static files once."""
    call_command("collectstatic", interactive=False, verbosity=0, clear=False)


@pytest.fixture(scope="session", autouse=True)
def _end_other_database_sessions(django_db_setup, django_db_blocker) -> Iterator[None]:
    """At the end, the connections that threads kept (the health checks' pool) are ended, so that the
    test database can be dropped instead of being left behind "accessed by other users"."""
    yield
    from django.db import DatabaseError, connection

    if connection.vendor != "postgresql":
        return
    with django_db_blocker.unblock():
        connection.close()  # a test may have ended this one too: a fresh connection for the cleanup
        try:
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
        except DatabaseError as exc:  # tidying up: never a failure of the suite
            print(f"could not end the other sessions of the test database: {exc}")  # noqa: T201


@pytest.fixture(autouse=True)
def _seeded_environments(request: pytest.FixtureRequest) -> None:
    """The ground's seeded environments, made again for a test in a database transaction: a
    transactional test (live_server, migrations) flushes every table, seeded rows included, so a later
    test on the same pytest-xdist worker found none (which test ran first depends on the distribution)."""
    marker = request.node.get_closest_marker("django_db")
    if marker is None or marker.kwargs.get("transaction") or (marker.args and marker.args[0]):
        return
    request.getfixturevalue("db")
    import importlib

    from controlplane.models import Environment

    seeded = importlib.import_module("controlplane.migrations.0002_environments").SEEDED
    if Environment.objects.count() < len(seeded):
        for name, description, production, position in seeded:
            Environment.objects.get_or_create(
                name=name, defaults={"description": description, "production": production, "position": position}
            )


@pytest.fixture(autouse=True)
def _clear_cache() -> Iterator[None]:
    """Each test starts with an empty shared cache and no in-process copies of old rows."""
    from django.core.cache import cache

    from controlplane.localcopy import forget_all
    from controlplane.services import _last_used_written
    from monitoring.request_metrics import discard_pending

    cache.clear()
    forget_all()
    discard_pending()
    _last_used_written.clear()
    yield
    forget_all()


@pytest.fixture
def operator(db):
    return UserFactory(username="operator", is_staff=True, is_superuser=True)


# What a viewer may read: each operator page's view permission (controlplane/access.py), nothing more.
VIEWER_PERMISSIONS = ("flags.view_flag", "deployments.view_deployment", "backups.view_backup", "alerting.view_alert")


@pytest.fixture
def viewer(db):
    """Staff who reads every operator page and changes nothing."""
    from django.contrib.auth.models import Permission

    user = UserFactory(username="viewer", is_staff=True)
    for code in VIEWER_PERMISSIONS:
        app_label, codename = code.split(".")
        user.user_permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))
    return user


@pytest.fixture
def outsider(db):
    """Logged in, but not staff: an account made for something other than operating the control plane."""
    return UserFactory(username="outsider")


@pytest.fixture
def operator_client(client, operator):
    client.force_login(operator)
    return client


@pytest.fixture
def viewer_client(client, viewer):
    client.force_login(viewer)
    return client


@pytest.fixture
def outsider_client(client, outsider):
    client.force_login(outsider)
    return client


@pytest.fixture
def make_token(db, django_capture_on_commit_callbacks):
    """make_token("flags:read", ...) -> the raw token, made through the service as an operator would
    (its after-commit publication included, as if the test's transaction had committed)."""
    from controlplane.audit import Actor
    from controlplane.services import api_token_create

    def make(*scopes: str, name: str = "test", expires_in_days: int | None = None) -> str:
        with django_capture_on_commit_callbacks(execute=True):
            _, raw = api_token_create(
                name=name, scopes=list(scopes), expires_in_days=expires_in_days, actor=Actor.system("tests")
            )
        return raw

    return make


@pytest.fixture
def api_client(client, make_token):
    """api_client("monitoring:read") -> a test client sending a Bearer token with those scopes."""

    def make(*scopes: str):
        client.defaults["HTTP_AUTHORIZATION"] = f"Bearer {make_token(*scopes)}"
        return client

    return make


@pytest.fixture
def eager_tasks():
    """Queued tasks run at once, in the test, as a worker would run them (retries included)."""
    from controlplane.celery import app as celery_app

    before = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = True
    yield
    celery_app.conf.task_always_eager = before


@pytest.fixture
def http_sink():
    """A local HTTP server standing in for Sentry, Slack or a webhook."""
    from tests.httpsink import HttpSink

    sink = HttpSink().start()
    yield sink
    sink.stop()


def subprocess_env(**overrides: str | None) -> dict[str, str]:
    """The environment for a child process of the control plane: ours, with overrides (None removes)."""
    env = dict(os.environ)
    env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    env["PYTHONUNBUFFERED"] = "1"
    for key, value in overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def manage(*args: str) -> list[str]:
    return [sys.executable, str(BASE_DIR / "manage.py"), *args]


def test_database_url() -> str:
    """A URL for the database the tests run on, for a child process (a worker) to use."""
    db = settings.DATABASES["default"]
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    auth = db["USER"] + (f":{db['PASSWORD']}" if db.get("PASSWORD") else "")
    host = db.get("HOST") or "127.0.0.1"
    port = db.get("PORT") or 5432
    return f"postgres://{auth}@{host}:{port}/{db['NAME']}"


test_database_url.__test__ = False  # a helper, not a test


@pytest.fixture(scope="session")
def live_server() -> Iterator[object]:
    """pytest-django's live server, serving static files from STATIC_ROOT as whitenoise does in
    production (its default handler looks files up through the finders, which do not know the
    manifest's hashed names)."""
    from django.test.testcases import _StaticFilesHandler
    from pytest_django.live_server_helper import LiveServer

    server = LiveServer(os.environ.get("DJANGO_LIVE_TEST_SERVER_ADDRESS", "localhost"), start=False)
    server.thread.static_handler = _StaticFilesHandler
    server.start()
    yield server
    server.stop()


# --- Browser --------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict) -> dict:
    """Debian's Chromium; Playwright's own browser download does not work on these machines."""
    return {
        **browser_type_launch_args,
        "executable_path": CHROMIUM,
        "args": [
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
        ],
    }


def pytest_configure(config: pytest.Config) -> None:
    """Start each session with an empty broker queue (no stale message reaches a test worker) and no
    Prometheus files of an earlier session: once, before any test, in the process that starts xdist's
    workers (not in each worker, where the two removals raced: one found a folder the other had just
    removed, and every test of that worker failed at its setup)."""
    if hasattr(config, "workerinput"):
        return
    for folder in (Path(settings.VAR_DIR) / "broker" / "queue", Path(settings.PROMETHEUS_MULTIPROC_DIR)):
        if folder.is_dir():
            shutil.rmtree(folder)
            folder.mkdir(parents=True)


@pytest.fixture
def celery_worker_process(tmp_path):
    """celery_worker_process(**env) -> (queue, log path): a real worker on a queue of its own (no
    other worker can take its messages, and the tasks it queues itself go there too), on the test
    database; stopped after the test."""
    import subprocess
    import uuid

    workers = []

    def start(**env: str) -> tuple[str, Path]:
        queue = f"test-{uuid.uuid4().hex[:12]}"
        log = tmp_path / f"worker-{queue}.log"
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "controlplane",
                "worker",
                "--pool",
                "solo",
                "-Q",
                queue,
                "-n",  # a node name of its own: workers of concurrent runs on one broker do not collide
                f"{queue}@%h",
                "--loglevel",
                "INFO",
                "--without-heartbeat",
                "--without-gossip",
                "--without-mingle",
            ],  # fmt: skip
            cwd=BASE_DIR,
            env=subprocess_env(DATABASE_URL=test_database_url(), **{"CELERY_QUEUE": queue, **env}),
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
        )
        workers.append(worker)
        return queue, log

    yield start
    # A worker idle on RabbitMQ notices SIGTERM only when its event loop next wakes (kombu's hub polls for
    # up to 10 s with no timer due): the test is over, so after a short grace it is killed.
    for worker in workers:
        worker.terminate()
    for worker in workers:
        try:
            worker.wait(timeout=2)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(timeout=30)


@pytest.fixture
def gunicorn_server(tmp_path):
    """gunicorn_server(workers=2, **env) -> base URL of a gunicorn serving the test database (unless env
    names another DATABASE_URL)."""
    import signal
    import subprocess
    import time
    import urllib.request

    servers = []

    def start(workers: int = 2, **env: str) -> str:
        port = free_port()
        log = tmp_path / f"gunicorn-{port}.log"
        # As production starts it (deploy/gunicorn.conf.py), with Prometheus files of its own: the
        # configuration empties that directory as it starts.
        env.setdefault("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / f"prometheus-{port}"))
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "-c",
                "deploy/gunicorn.conf.py",
                "controlplane.wsgi",
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                str(workers),
            ],  # fmt: skip
            cwd=BASE_DIR,
            env=subprocess_env(**{"DATABASE_URL": test_database_url(), **env}),
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        servers.append(server)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(base + "/health/live", timeout=2).read()
                return base
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"gunicorn did not start:\n{log.read_text()}")
                time.sleep(0.2)

    yield start
    for server in servers:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def free_port() -> int:
    """A loopback port nothing listens on (now): for a server a test starts, or one that is "down"."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def private_redis(tmp_path):
    """A Redis server of this test's own, so the test can stop it."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    port = free_port()
    server = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
    )
    import redis

    for _ in range(100):
        try:
            redis.Redis(port=port).ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    yield server, f"redis://127.0.0.1:{port}/0"
    server.kill()
    server.wait()


@pytest.fixture
def private_redis_cache(private_redis, settings):
    """The shared cache on this test's own Redis (which the test may stop), with short timeouts, and
    every in-process copy looking at the shared version on every read. Yields (server, url)."""
    server, url = private_redis
    settings.CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": url,
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.5, "SOCKET_TIMEOUT": 0.5},
        }
    }
    settings.CONTROLPLANE_RELOAD_INTERVAL = 0
    return server, url


# `make run` always starts on the embedded defaults (its tests unset DATABASE_URL and friends), so the
# tests that start it run once, in CI's embedded round, not again in the service round.
EMBEDDED_ROUND_ONLY = pytest.mark.skipif(
    bool(os.environ.get("DATABASE_URL")),
    reason="starts make run on the embedded defaults: covered by the round without DATABASE_URL",
)
