"""Production readiness: the command, the system checks and the API agree."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.conftest import manage, service_url, subprocess_env

GOOD_KEY = "k3J9!xQ2@vL7#pR4$wT8%zY1^bN6&mC5*hG0(dF3)sA9_eU2+iO7-yK4"


def age_keys(tmp_path) -> dict[str, str]:
    """BACKUP_AGE_RECIPIENTS and BACKUP_AGE_IDENTITY_FILE of a new age key pair (identity in ``tmp_path``)."""
    from pyrage import x25519

    identity = x25519.Identity.generate()
    path = tmp_path / "age-identity.txt"
    path.write_text(f"# test key\n{identity}\n")
    return {"BACKUP_AGE_RECIPIENTS": str(identity.to_public()), "BACKUP_AGE_IDENTITY_FILE": str(path)}


def production_env(tmp_path, **overrides):
    env = {
        **age_keys(tmp_path),
        "CONTROLPLANE_VAR_DIR": str(tmp_path),
        "DJANGO_ENV": "production",
        "SECRET_KEY": GOOD_KEY,
        "ALLOWED_HOSTS": "ops.example.test",
        "DEBUG": None,
        "DATABASE_URL": "postgres://cp:db-pass-123456@db.example.test:5432/cp",
        "REDIS_URL": "redis://:redis-pass-123456@cache.example.test:6379/0",
        "CELERY_BROKER_URL": "amqp://cp:mq-pass-123456@mq.example.test:5672//",
        "SENTRY_DSN": "https://sentrykey123456@sentry.example.test/4",
        "EMAIL_URL": "smtp+tls://alerts:mail-pass-123456@smtp.example.test:587",
        "CONTROLPLANE_RELEASE": "2026.11.29-1",
    }
    env.update(overrides)
    return subprocess_env(**env)


def run(*args, env):
    return subprocess.run(manage(*args), env=env, capture_output=True, text=True, timeout=60)


def test_a_correct_production_environment_passes_everything(tmp_path):
    env = production_env(tmp_path)
    result = run("readiness", "--json", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    # Every configuration item passes; the alert channels and backup targets live in the database,
    # which this test's made-up host does not serve: those items alone warn
    # (test_production_on_real_servers reads them).
    statuses = {item["name"]: item["status"] for item in report["items"]}
    assert statuses.pop("alert_channel") == "warn"
    assert statuses.pop("backups") == "warn"
    assert statuses.pop("restore_drills") == "warn"  # the recovery plans live in the database too
    assert set(statuses.values()) == {"pass"}
    assert {item["name"] for item in report["items"]} >= {
        "secret_key", "debug", "allowed_hosts", "https", "database", "cache", "broker", "sentry", "email",
    }  # fmt: skip
    deploy = run("check", "--deploy", env=env)
    assert deploy.returncode == 0, deploy.stdout + deploy.stderr
    output = deploy.stdout + deploy.stderr
    # Each app reports its own items: the configuration (controlplane) passes; alerting's alert
    # channels and backups' targets live in the database this test's made-up host does not serve.
    # (backups reports two: its targets and the recovery plans' restore drills.)
    assert "identified 3 issues" in output and "alerting.W001" in output and "backups.W001" in output
    assert "manage.py migrate" in output  # the hint of an item whose rows could not be read


def test_embedded_defaults_fail_with_hints_and_a_non_zero_exit(tmp_path):
    result = run(
        "readiness",
        env=subprocess_env(
            CONTROLPLANE_VAR_DIR=str(tmp_path),
            DATABASE_URL=None,
            REDIS_URL=None,
            CELERY_BROKER_URL=None,
            SENTRY_DSN=None,
        ),
    )
    assert result.returncode == 1
    lines = {line.split()[1]: line for line in result.stdout.splitlines() if line[:4] in {"PASS", "WARN", "FAIL"}}
    assert lines["database"].startswith("FAIL") and "DATABASE_URL" in lines["database"]
    assert lines["broker"].startswith("FAIL") and "CELERY_BROKER_URL" in lines["broker"]
    assert lines["sentry"].startswith("WARN") and "SENTRY_DSN" in lines["sentry"]
    assert lines["cache"].startswith("WARN")
    assert result.stdout.strip().endswith("overall: fail")


def test_check_deploy_reports_the_same_items(tmp_path):
    result = run("check", "--deploy", env=production_env(tmp_path, SENTRY_DSN=None, CELERY_BROKER_URL=None))
    assert "controlplane.E008" in result.stderr + result.stdout  # broker, the 8th configuration item
    assert "SENTRY_DSN" in result.stderr + result.stdout


@pytest.mark.django_db
def test_config_api_returns_readiness_and_services_without_secrets(api_client, settings):
    settings.CONTROLPLANE_RELEASE = "2026.11.29-1"
    settings.SENTRY_DSN = "https://sentrykey123456@sentry.example.test/4"
    response = api_client("monitoring:read").get("/api/deployment/config/production")
    assert response.status_code == 200
    body = response.json()
    assert body["deployment"]["version"] == "2026.11.29-1"
    assert body["deployment"]["environment"] == settings.DJANGO_ENV
    assert set(body["deployment"]["services"]) == {"database", "cache", "broker", "sentry", "email"}
    assert body["deployment"]["services"]["sentry"]["configured"] is True
    assert {item["name"] for item in body["items"]} >= {"database", "broker", "sentry"}
    text = response.content.decode()
    assert "sentrykey123456" not in text and settings.SECRET_KEY not in text


@pytest.mark.django_db
def test_config_api_needs_monitoring_scope(api_client):
    assert api_client("deploy").get("/api/deployment/config/production").status_code == 403


@pytest.mark.service("postgres", "redis", "rabbitmq")
def test_production_on_real_servers_passes(tmp_path):
    env = production_env(
        tmp_path,
        DATABASE_URL=service_url("postgres"),
        REDIS_URL=service_url("redis"),
        CELERY_BROKER_URL=service_url("rabbitmq"),
    )
    result = run("readiness", env=env)
    assert result.returncode == 0, result.stdout
    assert run("preflight", env=env).returncode == 0
    assert run("check", "--deploy", "--fail-level", "ERROR", env=env).returncode == 0


def _backup_encryption(env) -> dict:
    result = run("readiness", "--json", env=env)
    return next(item for item in json.loads(result.stdout)["items"] if item["name"] == "backup_encryption")


def test_production_warns_when_backups_are_not_encrypted(tmp_path):
    item = _backup_encryption(production_env(tmp_path, BACKUP_AGE_RECIPIENTS=None, BACKUP_AGE_IDENTITY_FILE=None))
    assert item["status"] == "warn"
    assert "not encrypted" in item["message"] and "BACKUP_AGE_RECIPIENTS" in item["hint"]


def test_an_identity_that_decrypts_none_of_the_recipients_fails(tmp_path):
    (tmp_path / "other").mkdir()
    other = age_keys(tmp_path / "other")
    env = production_env(tmp_path, BACKUP_AGE_IDENTITY_FILE=other["BACKUP_AGE_IDENTITY_FILE"])
    item = _backup_encryption(env)
    assert item["status"] == "fail" and "matches" in item["message"]
    assert "AGE-SECRET-KEY" not in json.dumps(item)


def test_a_secret_key_given_as_recipient_stops_the_start_without_repeating_it(tmp_path):
    from pyrage import x25519

    secret = str(x25519.Identity.generate())
    result = run("readiness", "--json", env=production_env(tmp_path, BACKUP_AGE_RECIPIENTS=secret))
    assert result.returncode != 0
    assert "BACKUP_AGE_RECIPIENTS: item 1 is a secret key" in result.stderr
    assert secret not in result.stdout + result.stderr


def test_an_unknown_upload_checksum_setting_stops_the_start_naming_it(tmp_path):
    result = run("readiness", "--json", env=production_env(tmp_path, BACKUP_S3_CHECKSUMS="sometimes"))
    assert result.returncode != 0
    assert "BACKUP_S3_CHECKSUMS: when_supported or when_required" in result.stderr
