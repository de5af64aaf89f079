"""Configuration from the environment: embedded defaults, real servers, and clear refusals."""

from __future__ import annotations

import subprocess

import pytest

from tests.conftest import manage, service_url, subprocess_env

GOOD_KEY = "k3J9!xQ2@vL7#pR4$wT8%zY1^bN6&mC5*hG0(dF3)sA9_eU2+iO7-yK4"
EMBEDDED = {"DATABASE_URL": None, "REDIS_URL": None, "CELERY_BROKER_URL": None}


def run(*args: str, **env: str | None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(manage(*args), env=subprocess_env(**env), capture_output=True, text=True, timeout=60)


def assert_one_line_error(result: subprocess.CompletedProcess[str], variable: str) -> str:
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert variable in lines[0]
    assert "Traceback" not in result.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"DJANGO_ENV": "staging"}, "DJANGO_ENV"),
        ({"DATABASE_URL": "mysql://root@127.0.0.1/x"}, "DATABASE_URL"),
        ({"DATABASE_URL": "not a url"}, "DATABASE_URL"),
        ({"DATABASE_URL": "postgres://postgres@127.0.0.1:5432"}, "DATABASE_URL"),
        ({"REDIS_URL": "memcached://127.0.0.1:11211"}, "REDIS_URL"),
        ({"CELERY_BROKER_URL": "sqs://"}, "CELERY_BROKER_URL"),
        ({"DEBUG": "maybe"}, "DEBUG"),
        ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL"),
        ({"DATABASE_CONN_MAX_AGE": "forever", "DATABASE_URL": "postgres://u@h/db"}, "DATABASE_CONN_MAX_AGE"),
        ({"DATABASE_URL": "sqlite://"}, "DATABASE_URL"),  # in memory: not shared by web, worker and beat
        ({"REDIS_URL": "redis://[bad"}, "REDIS_URL"),
        ({"CELERY_BROKER_URL": "redis://[bad"}, "CELERY_BROKER_URL"),
        ({"CELERY_BROKER_URL": "amqp://guest@127.0.0.1:port//"}, "CELERY_BROKER_URL"),
        ({"SENTRY_DSN": "https://key@[bad/1"}, "SENTRY_DSN"),
        ({"BACKUP_SCRATCH_DATABASE_URL": "postgres://[bad/x"}, "BACKUP_SCRATCH_DATABASE_URL"),
        ({"DATABASE_POOL_SIZE": "many", "DATABASE_URL": "postgres://u@h/db"}, "DATABASE_POOL_SIZE"),
        ({"DATABASE_POOL_SIZE": "-1", "DATABASE_URL": "postgres://u@h/db"}, "DATABASE_POOL_SIZE"),
        # Django refuses a pool beside persistent connections; so does the configuration, by name.
        (
            {"DATABASE_POOL_SIZE": "4", "DATABASE_CONN_MAX_AGE": "60", "DATABASE_URL": "postgres://u@h/db"},
            "DATABASE_CONN_MAX_AGE",
        ),
        ({"PUBLIC_URL": "ops.example.com"}, "PUBLIC_URL"),  # no scheme: links would be relative
        ({"PUBLIC_URL": "https://ops.example.com/?next=/"}, "PUBLIC_URL"),
    ],
)
def test_bad_value_stops_with_one_line_naming_the_variable(env, variable):
    assert_one_line_error(run("check", **env), variable)


@pytest.mark.parametrize(
    ("variable", "url"),
    [
        ("REDIS_URL", "redis://:s3cr#et-part@cache.example.test:6379/0"),
        ("CELERY_BROKER_URL", "amqp://cp:s3cr/et-part@mq.example.test:5672//"),
        ("DATABASE_URL", "postgres://cp:s3cr#et-part@db.example.test:5432/cp"),
    ],
)
def test_a_malformed_url_is_refused_without_quoting_its_password(variable, url):
    result = run("check", **{variable: url})
    line = assert_one_line_error(result, variable)
    assert "s3cr" not in result.stdout + result.stderr and "et-part" not in result.stdout + result.stderr
    assert "percent-encode" in line


PRODUCTION = {"DJANGO_ENV": "production", "SECRET_KEY": GOOD_KEY, "ALLOWED_HOSTS": "ops.example.test", "DEBUG": "0"}


@pytest.mark.parametrize(
    ("override", "variable"),
    [
        ({"SECRET_KEY": None}, "SECRET_KEY"),
        ({"SECRET_KEY": "short-key"}, "SECRET_KEY"),
        ({"SECRET_KEY": "django-insecure-" + "x" * 50}, "SECRET_KEY"),
        ({"DEBUG": "true"}, "DEBUG"),
        ({"ALLOWED_HOSTS": ""}, "ALLOWED_HOSTS"),
    ],
)
def test_production_refuses_insecure_settings(override, variable):
    assert_one_line_error(run("check", **{**PRODUCTION, **override}), variable)


@pytest.mark.parametrize("config", [[], ["-c", "deploy/gunicorn.conf.py"]], ids=["procfile", "systemd"])
def test_gunicorn_started_on_insecure_settings_stops_instead_of_restarting_workers(config, tmp_path):
    """The web process alone (as on its own machines): it exits with the one line, not a restart loop."""
    import sys

    from tests.conftest import BASE_DIR

    env = subprocess_env(**{**PRODUCTION, "SECRET_KEY": None, "CONTROLPLANE_VAR_DIR": str(tmp_path), **EMBEDDED})
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        *config,
        "controlplane.wsgi",
        "--bind",
        "127.0.0.1:0",
        "--workers",
        "2",
    ]
    result = subprocess.run(command, env=env, cwd=BASE_DIR, capture_output=True, text=True, timeout=60)
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "configuration error: SECRET_KEY" in output
    if config:  # the production configuration checks the settings before starting any worker
        assert_one_line_error(result, "SECRET_KEY")


def test_production_starts_on_secure_settings():
    result = run("check", **PRODUCTION)
    assert result.returncode == 0, result.stderr


def test_embedded_defaults_need_no_server(tmp_path):
    result = run("preflight", CONTROLPLANE_VAR_DIR=str(tmp_path), **EMBEDDED)
    assert result.returncode == 0, result.stderr
    assert "sqlite" in result.stdout and "filesystem" in result.stdout
    # The development secret key is random, kept private under the data directory.
    key_file = tmp_path / "secret_key"
    assert key_file.stat().st_mode & 0o077 == 0
    assert len(key_file.read_text().strip()) >= 50


def test_broker_that_does_not_answer_is_one_line_without_the_password(tmp_path):
    result = run(
        "preflight",
        CONTROLPLANE_VAR_DIR=str(tmp_path),
        DATABASE_URL=None,
        CELERY_BROKER_URL="amqp://guest:s3cret-pass@127.0.0.1:1//",
        CELERY_BROKER_CONNECTION_TIMEOUT="1",
    )
    line = assert_one_line_error(result, "CELERY_BROKER_URL")
    assert "s3cret-pass" not in result.stderr + result.stdout
    assert "does not answer" in line


def test_database_that_does_not_answer_is_one_line(tmp_path):
    result = run(
        "preflight",
        CONTROLPLANE_VAR_DIR=str(tmp_path),
        DATABASE_URL="postgres://postgres@127.0.0.1:1/test",
        DATABASE_CONNECT_TIMEOUT="1",
    )
    assert_one_line_error(result, "DATABASE_URL")


@pytest.mark.service("postgres")
def test_database_url_moves_the_database_to_postgresql(tmp_path):
    result = run("preflight", CONTROLPLANE_VAR_DIR=str(tmp_path), DATABASE_URL=service_url("postgres"))
    assert result.returncode == 0, result.stderr
    assert "postgresql" in result.stdout


@pytest.mark.service("rabbitmq")
def test_broker_url_moves_the_broker_to_rabbitmq(tmp_path):
    result = run("preflight", CONTROLPLANE_VAR_DIR=str(tmp_path), CELERY_BROKER_URL=service_url("rabbitmq"))
    assert result.returncode == 0, result.stderr
    assert "amqp" in result.stdout


@pytest.mark.service("redis")
def test_redis_url_moves_the_cache_to_redis(tmp_path):
    import redis

    code = (
        "from django.core.cache import cache; from django.conf import settings;"
        "print(settings.CACHES['default']['BACKEND']);"
        "cache.set('settings-test', 'round trip', 30); print(cache.get('settings-test'))"
    )
    result = run(
        "shell", "--verbosity", "0", "-c", code, CONTROLPLANE_VAR_DIR=str(tmp_path), REDIS_URL=service_url("redis")
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["django_redis.cache.RedisCache", "round", "trip"]
    # The value is really in that Redis, under the control plane's key prefix.
    client = redis.Redis.from_url(service_url("redis"))
    assert any(b"settings-test" in key for key in client.keys("cp:*settings-test"))
