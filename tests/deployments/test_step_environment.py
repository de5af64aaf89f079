"""A command step does not see the worker's environment (the control plane's own secrets), only the
basics and what the step names."""

from __future__ import annotations

import pytest

from deployments.steps import run_step
from tests.deployments.test_steps import Recorder

SHOW = "import os; print(sorted(k for k in os.environ if k not in {'LC_CTYPE'})); print(os.environ.get('TARGET_URL'))"


def test_a_command_gets_the_basics_and_its_own_env_not_the_workers(settings, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgres://controlplane:worker-db-pass@db/cp")
    monkeypatch.setenv("SECRET_KEY", "the-control-planes-own-secret-key-" * 2)
    monkeypatch.setenv("PRODUCT_DB_URL", "postgres://product:product-pass@db/product")
    settings.DEPLOY_SECRETS = ["PRODUCT_DB_URL"]
    recorder = Recorder()
    step = {
        "name": "migrate",
        "kind": "command",
        "argv": ["{python}", "-c", SHOW],
        "env": {"TARGET_URL": "${PRODUCT_DB_URL}", "MODE": "{environment}"},
    }
    assert run_step(step, recorder.context) == 0
    names, value = recorder.output.splitlines()
    assert "DATABASE_URL" not in names and "SECRET_KEY" not in names
    assert "'MODE'" in names and "'PATH'" in names and "'TARGET_URL'" in names
    assert value == "postgres://product:product-pass@db/product"  # expanded for the command itself


@pytest.mark.parametrize("name", ["DATABASE_URL", "SECRET_KEY", "REDIS_URL", "CELERY_BROKER_URL", "SENTRY_DSN"])
def test_none_of_the_control_planes_settings_leak_into_a_command(name, monkeypatch):
    monkeypatch.setenv(name, "leaky-value-123456")
    recorder = Recorder()
    code = f"import os; print(os.environ.get({name!r}, 'absent'))"
    run_step({"name": "s", "kind": "command", "argv": ["{python}", "-c", code]}, recorder.context)
    assert recorder.output.strip() == "absent"
