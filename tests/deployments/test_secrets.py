"""Secret settings stay secret: a version is a plain release name at every entry point, ``${NAME}`` is
expanded only in a pipeline's own text, dry-run descriptions are redacted, and the values of
DEPLOY_SECRETS are hidden from the control plane's own logs and Sentry events."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
from datetime import timedelta
from io import StringIO

import pytest
import sentry_sdk
from django.conf import settings as django_settings
from django.core.management import CommandError, call_command
from django.test import override_settings
from django.utils import timezone

from controlplane.logging import JsonFormatter, TextFormatter
from controlplane.redaction import REDACTED, _configured_secrets
from controlplane.sentry import init_sentry
from deployments.defaults import DEMO_RECOVERY_PLANS, ensure_defaults
from deployments.models import Deployment, DeploymentType, Environment, LogLine, RecoveryPlan
from deployments.runner import RunOutcome, run
from deployments.steps import Context, StepFailed, describe, run_step
from tests.conftest import manage, subprocess_env, test_database_url
from tests.deployments.conftest import echo

STEPS = [echo("one", "step one")]
NAME = "WINGMANMATCH_DATABASE_URL"
VALUE = "postgres://wingman:s3cret-db-pass@db.internal:5432/wingmanmatch"
OTHER = "TEST_DEPLOY_HOOK_TOKEN"
OTHER_VALUE = "hook-7f3a9c1e5b"
DEPLOY = "/api/deployment/deploy"

BAD_VERSIONS = [
    "${WINGMANMATCH_DATABASE_URL}",
    "${X}",
    "v1-${X}",
    "$X",
    "v1$",
    "{version}",
    "{environment}",
    "v{python}",
    "-rf",
    "--help",
    "-",
    "a/b",
    "/etc/passwd",
    "..",
    "../x",
    "a..b",
    "v1..",
    ".",
    ".hidden",
    "_x",
    "+x",
    "v1'",
    'v1"',
    "`id`",
    "v1;id",
    "v1|id",
    "v1&id",
    "v1>x",
    "v1\\x",
    "v1%s",
    "v1 beta",
    " v1",
    "v1 ",
    "\tv1",
    "v1\n",
    "v1\nv2",
    "\nv1",
    "v1\r",
    "v1\x00",
    "v1\x1b[31m",
    "v" * 129,
    "",
    " ",
    "v1é",
    "v１",  # a fullwidth digit
    "версия",
    "v1\u200b",  # a zero-width space
    "🚀",
]
GOOD_VERSIONS = ["v1", "1.2.3", "v1.4.2-rc.1+build.5", "release_2024-05-01", "A", "v" * 128, "1"]
VERSION_WORDS = "at most 128 characters: letters, digits"


def _label(version: str) -> str:
    return repr(version)[:40]


@pytest.fixture
def deploy_secret(monkeypatch):
    """WINGMANMATCH_DATABASE_URL (and a hook token) listed in DEPLOY_SECRETS and set in the environment;
    the global redaction's cached values are read again before and after."""
    monkeypatch.setenv(NAME, VALUE)
    monkeypatch.setenv(OTHER, OTHER_VALUE)
    with override_settings(DEPLOY_SECRETS=[NAME, OTHER]):
        _configured_secrets.cache_clear()
        yield VALUE
    _configured_secrets.cache_clear()


# --- The attack, through the API ----------------------------------------------------------------


@pytest.mark.django_db
def test_a_deploy_token_cannot_deploy_a_version_that_reads_a_secret(api_client, deploy_secret):
    ensure_defaults()
    api = api_client("deploy")
    response = api.post(DEPLOY, {"environment": "demo", "version": "${" + NAME + "}"}, content_type="application/json")
    assert response.status_code == 422, response.content
    answer = response.json()
    assert (answer["error"], answer["field"]) == ("invalid", "version")
    assert VERSION_WORDS in answer["detail"] and "no '..'" in answer["detail"]
    assert VALUE not in response.content.decode()
    assert not Deployment.objects.exists()


@pytest.mark.django_db
def test_a_version_stored_before_the_rule_cannot_feed_a_recovery_plan_or_a_rollback(api_client, deploy_secret):
    """A row written before versions were checked: the recovery plan and the rollback that would
    reuse it are refused naming the version, and nothing is queued."""
    ensure_defaults()
    production = Environment.objects.get(name="production")  # where the shipped recovery plans act
    now = timezone.now()

    def succeeded(version: str, minutes_ago: int) -> None:
        at = now - timedelta(minutes=minutes_ago)
        Deployment.objects.create(
            environment=production,
            version=version,
            status="succeeded",
            requested_by="old",
            created_at=at,
            finished_at=at,
        )

    succeeded("v1", 30)
    succeeded("${" + NAME + "}", 20)  # the last one to succeed: a recovery plan reruns it
    api = api_client("deploy")
    recovery = api.post("/api/deployment/recovery/rollback/application_failure?dry_run=true")
    assert recovery.status_code == 422 and recovery.json()["field"] == "version"
    succeeded("v2", 10)  # now the current release, and the bad one "the previous" to roll back to
    rollback = api.post(DEPLOY, {"environment": "production", "type": "rollback"}, content_type="application/json")
    assert rollback.status_code == 422 and rollback.json()["field"] == "version"
    assert VALUE not in recovery.content.decode() + rollback.content.decode()
    assert Deployment.objects.count() == 3 and not Deployment.objects.active().exists()


# --- Every entry point refuses every bad version ------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("version", [*BAD_VERSIONS, 42, None, ["v1"], {"v": 1}, True], ids=_label)
def test_the_api_refuses_a_bad_version_with_a_422_naming_it(api_client, environment, version):
    environment(STEPS)
    response = api_client("deploy").post(
        DEPLOY, {"environment": "test", "version": version}, content_type="application/json"
    )
    assert response.status_code == 422, response.content
    answer = response.json()
    assert set(answer) == {"error", "detail", "field"}
    assert (answer["error"], answer["field"]) == ("invalid", "version")
    assert not Deployment.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("version", BAD_VERSIONS, ids=_label)
def test_the_page_refuses_a_bad_version_with_the_error_on_the_form(operator_client, environment, version):
    environment(STEPS)
    response = operator_client.post("/deployments/deploy", {"environment": "test", "version": version})
    assert response.status_code == 422
    html = response.content.decode()
    assert '<p class="error" id="deploy-error" role="alert">version: ' in html
    assert 'aria-invalid="true" aria-describedby="deploy-error"></label>' in html  # on the version input
    assert not Deployment.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("version", BAD_VERSIONS, ids=_label)
def test_the_admin_deploy_action_refuses_a_bad_version(operator_client, environment, version):
    env = environment(STEPS)
    action = {"action": "deploy", "_selected_action": [env.pk], "index": "0", "version": version}
    response = operator_client.post("/admin/deployments/environment/", action, follow=True)
    assert response.status_code == 200
    assert "Test: version: " in response.content.decode()
    assert not Deployment.objects.exists()


@pytest.mark.django_db
def test_deployments_cannot_be_added_in_the_admin(operator_client, environment):
    """The environment's deploy action (above) is the admin's only way to start one."""
    environment(STEPS)
    assert operator_client.get("/admin/deployments/deployment/add/").status_code == 403
    assert operator_client.post("/admin/deployments/deployment/add/", {"version": "${X}"}).status_code == 403
    assert not Deployment.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("version", BAD_VERSIONS, ids=_label)
def test_manage_py_deploy_refuses_a_bad_version_in_one_line(environment, version):
    environment(STEPS)
    with pytest.raises(CommandError) as raised:
        call_command("deploy", "test", f"--version={version}", stdout=StringIO())  # as typed: "--version=-rf"
    message = str(raised.value)
    assert message.startswith("version: ") and "\n" not in message
    assert not Deployment.objects.exists()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("version", ["-rf", "${" + NAME + "}", "v1\nv2"], ids=_label)
def test_manage_py_deploy_in_a_real_process_exits_non_zero_with_one_line(environment, tmp_path, version):
    environment(STEPS)
    result = subprocess.run(
        manage("deploy", "test", f"--version={version}"),
        env=subprocess_env(CONTROLPLANE_VAR_DIR=str(tmp_path), DATABASE_URL=test_database_url()),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"CommandError: version: {VERSION_WORDS}") and result.stdout == ""
    assert not Deployment.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("version", GOOD_VERSIONS, ids=_label)
def test_a_plain_release_name_is_accepted_as_given(api_client, environment, version):
    environment(STEPS)
    response = api_client("deploy").post(
        DEPLOY, {"environment": "test", "version": version}, content_type="application/json"
    )
    assert response.status_code == 202, response.content
    assert Deployment.objects.get().version == version


# --- Expansion: only the pipeline's own text, in one pass --------------------------------------


def context(**variables: str) -> Context:
    chunks: list[str] = []
    ctx = Context(
        variables={
            "version": "v1.2.3",
            "environment": "staging",
            "deployment": "7",
            "python": sys.executable,
            "base_dir": str(django_settings.BASE_DIR),
            **variables,
        },  # fmt: skip
        output=chunks.append,
        started_process=lambda pid: None,
        cancelled=threading.Event(),
        environment_health_url="",
        actor_label="tests",
    )
    ctx.chunks = chunks  # type: ignore[attr-defined]
    return ctx


def test_a_secret_in_the_pipeline_text_still_expands(deploy_secret):
    assert context().expand("${" + NAME + "} for {version} on {environment}") == f"{VALUE} for v1.2.3 on staging"
    assert context().expand("$${" + OTHER + "}{unknown}") == f"${OTHER_VALUE}{{unknown}}"


@pytest.mark.parametrize(
    "inserted",
    [
        "${" + NAME + "}",
        "${" + OTHER + "}",
        "{version}",
        "{environment}",
        "${X}",
        "{{version}}",
        "${" + NAME + "}{version}",
    ],
)
def test_a_value_inserted_by_a_reference_is_never_expanded_again(deploy_secret, inserted):
    """Through {version} (a row from before the rule), another variable, or a secret's own value."""
    assert context(version=inserted).expand("deploy {version}") == f"deploy {inserted}"
    assert context(environment=inserted).expand("{environment}/{version}") == f"{inserted}/v1.2.3"


def test_a_secret_whose_value_holds_references_is_taken_literally(deploy_secret, monkeypatch):
    monkeypatch.setenv(OTHER, "tok-${" + NAME + "}-{version}")
    assert context().expand("Bearer ${" + OTHER + "}") == "Bearer tok-${" + NAME + "}-{version}"


def test_a_command_gets_an_inserted_reference_as_plain_text(deploy_secret):
    ctx = context(version="${" + NAME + "}")
    step = {"name": "x", "kind": "command", "argv": ["{python}", "-c", "import sys; print(sys.argv[1])", "{version}"]}
    assert run_step(step, ctx) == 0
    assert "".join(ctx.chunks) == "${" + NAME + "}\n"  # type: ignore[attr-defined]


def test_an_unlisted_name_in_the_pipeline_text_still_fails_the_step(deploy_secret, monkeypatch):
    monkeypatch.setenv("HOME_GROWN_TOKEN", "not-for-steps")
    with pytest.raises(StepFailed, match="is not a secret setting"):
        context().expand("${HOME_GROWN_TOKEN}")
    assert context(version="${HOME_GROWN_TOKEN}").expand("{version}") == "${HOME_GROWN_TOKEN}"


def test_a_dry_run_description_never_expands_a_secret(deploy_secret):
    ctx = context(version="${" + NAME + "}")
    command = {"name": "x", "kind": "command", "argv": ["deploy", "{version}", "--db", "${" + NAME + "}"]}
    assert describe(command, ctx) == f'run ["deploy", "${{{NAME}}}", "--db", "${{{NAME}}}"]'
    http = {"name": "h", "kind": "http", "url": "https://hooks.test/{environment}?t=${" + OTHER + "}"}
    assert describe(http, ctx) == f"POST https://hooks.test/staging?t=${{{OTHER}}} expecting 2xx"
    gate = {"name": "g", "kind": "health_gate", "url": "https://{environment}.test/${" + OTHER + "}"}
    assert describe(gate, ctx).startswith(f"wait until https://staging.test/${{{OTHER}}} is healthy")
    assert VALUE not in describe(command, ctx) + describe(http, ctx) and OTHER_VALUE not in describe(http, ctx)


# --- Dry runs: redacted wherever they are shown --------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_recovery_plan_dry_run_is_redacted_in_the_step_output_the_log_the_api_and_the_page(
    api_client, operator_client, deploy_secret
):
    """A plan with a secret pasted into its steps and an environment health URL holding one: the
    description says what would run without either value."""
    ensure_defaults()
    Environment.objects.filter(name="demo").update(health_url=f"https://demo.test/health?token={OTHER_VALUE}")
    RecoveryPlan.objects.create(
        failure_type="hook_failure",
        environment=Environment.objects.get(name="demo"),
        steps=[
            {
                "name": "pasted hook",
                "kind": "http",
                "url": f"https://hooks.test/{OTHER_VALUE}/{{version}}",
                "rollback": {"name": "undo", "kind": "command", "argv": ["restore", VALUE]},
            },
            {"name": "health", "kind": "health_gate"},
            {"name": "by reference", "kind": "command", "argv": ["migrate", "${" + NAME + "}"]},
        ],  # fmt: skip
    )
    api = api_client("deploy")
    response = api.post("/api/deployment/recovery/rollback/hook_failure?dry_run=true")
    assert response.status_code == 202, response.content
    deployment_id = response.json()["id"]
    assert run(deployment_id) is RunOutcome.SUCCEEDED

    outputs = list(
        Deployment.objects.get(pk=deployment_id).step_runs.order_by("index").values_list("output", flat=True)
    )
    assert outputs == [
        f"would POST https://hooks.test/{REDACTED}/current expecting 2xx; on a later failure would run "
        f'["restore", "{REDACTED}"]',
        f"would wait until https://demo.test/health?token={REDACTED} is healthy (every 5 s, at most 300 s)",
        f'would run ["migrate", "${{{NAME}}}"]',
    ]
    log = list(LogLine.objects.filter(deployment_id=deployment_id).values_list("message", flat=True))
    assert all(text in log for text in outputs)
    shown = {
        "api": api.get(f"/api/deployment/deployments/{deployment_id}").content.decode(),
        "page": operator_client.get(f"/deployments/{deployment_id}/").content.decode(),
        "live": operator_client.get(f"/deployments/{deployment_id}/live").content.decode(),
    }
    for where, text in shown.items():
        assert VALUE not in text and OTHER_VALUE not in text, where
        assert "hooks.test/[redacted]/current" in text, where


@pytest.mark.django_db(transaction=True)
def test_a_dry_run_of_a_version_stored_before_the_rule_shows_the_reference_not_the_secret(
    api_client, operator_client, deploy_secret
):
    """The attack's last step, against a row that got in before versions were checked."""
    ensure_defaults()
    # The demo's application_failure plan: its steps pass the version to a command.
    deployment = Deployment.objects.create(
        environment=Environment.objects.get(name="demo"),
        version="${" + NAME + "}",
        type=DeploymentType.RECOVERY,
        recovery_type="application_failure",
        dry_run=True,
        requested_by="old",
        steps=DEMO_RECOVERY_PLANS["application_failure"]["steps"],
    )
    assert run(deployment.pk) is RunOutcome.SUCCEEDED
    detail = api_client("deploy").get(f"/api/deployment/deployments/{deployment.pk}").content.decode()
    page = operator_client.get(f"/deployments/{deployment.pk}/").content.decode()
    assert "backend-rollback" in detail and "${" + NAME + "}" in json.loads(detail)["steps"][0]["output"]
    assert VALUE not in detail and VALUE not in page
    assert not LogLine.objects.filter(message__contains=VALUE).exists()


# --- The global redaction: logs and Sentry ------------------------------------------------------


def test_a_deploy_secret_is_redacted_from_log_records(deploy_secret):
    record = logging.makeLogRecord(
        {"name": "deployments.runner", "levelno": logging.ERROR, "levelname": "ERROR",
         "msg": "could not reach %s with %s", "args": (VALUE, OTHER_VALUE), "hook": OTHER_VALUE}
    )  # fmt: skip
    for formatter in (JsonFormatter(), TextFormatter()):
        line = formatter.format(record)
        assert VALUE not in line and OTHER_VALUE not in line and "s3cret-db-pass" not in line
        assert f"could not reach {REDACTED} with {REDACTED}" in line  # the whole URL, not just its password


def test_a_deploy_secret_is_redacted_only_while_it_is_listed(monkeypatch):
    monkeypatch.setenv(NAME, VALUE)
    _configured_secrets.cache_clear()
    try:
        with override_settings(DEPLOY_SECRETS=[]):
            _configured_secrets.cache_clear()
            assert VALUE not in _configured_secrets()
        with override_settings(DEPLOY_SECRETS=[NAME]):
            _configured_secrets.cache_clear()
            assert VALUE in _configured_secrets()
    finally:
        _configured_secrets.cache_clear()


@pytest.mark.django_db
def test_a_deploy_secret_is_redacted_from_a_sentry_event(http_sink, deploy_secret):
    init_sentry(
        dsn=f"http://publickey@127.0.0.1:{http_sink.port}/7", environment="test", release="", traces_sample_rate=0
    )
    try:
        logging.getLogger("deployments.test").error("hook %s failed for %s", OTHER_VALUE, VALUE)
        sentry_sdk.flush(timeout=5)
        arrived = http_sink.wait_for(lambda r: "envelope" in r.path)
    finally:
        sentry_sdk.init()  # no DSN: reporting off again for the rest of the suite
    sent = json.dumps([item for request in arrived for item in request.envelope_items()])
    assert "hook" in sent and REDACTED in sent
    assert VALUE not in sent and OTHER_VALUE not in sent and "s3cret-db-pass" not in sent
