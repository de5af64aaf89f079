"""The step schema (checked before anything runs) and each kind of step run in-process."""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import pytest
from django.conf import settings

from deployments.defaults import DEMO_STEPS, PRODUCT_STEPS, RECOVERY_PLANS
from deployments.steps import (
    Context,
    InvalidStep,
    StepCancelled,
    StepFailed,
    redact,
    run_step,
    secret_values,
    validate_steps,
)

SECRET = "TEST_DEPLOY_HOOK_TOKEN"
SECRET_VALUE = "tok-3f9a1c77e2b4"


def command(name="step", argv=("/bin/true",), **extra):
    return {"name": name, "kind": "command", "argv": list(argv), **extra}


# --- Schema --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("steps", "field", "words"),
    [
        ([{"name": "a", "kind": "shell", "argv": ["x"]}], "steps[0].kind", "unknown kind 'shell'"),
        ([command("a"), {"name": "b", "kind": "command"}], "steps[1].argv", "non-empty list of strings"),
        ([command("a", argv=[])], "steps[0].argv", "non-empty list of strings"),
        ([command("a", argv=["ok", ""])], "steps[0].argv[1]", "non-empty string"),
        ([command("a", timeout=-5)], "steps[0].timeout", "more than 0"),
        ([command("a", timeout=True)], "steps[0].timeout", "more than 0"),
        (
            [command("a"), command("b", rollback=command("undo b", rollback=command("undo undo b")))],
            "steps[1].rollback.rollback",
            "no rollback of its own",
        ),
        ([command("a", rollback={"name": "undo a", "kind": "command"})], "steps[0].rollback.argv", "non-empty"),
        ([command("same"), command("other"), command("same")], "steps[2].name", "'same' is used twice"),
        ([{"kind": "command", "argv": ["x"]}], "steps[0].name", "required"),
        ([command("migrate\n")], "steps[0].name", "letters, digits"),  # "$" would let the newline through
        ([command(f"s{i}") for i in range(101)], "steps", "at most 100 steps"),
        (
            [{"name": "f", "kind": "flags", "set": {"new_checkout": {"enabled": "yes"}}}],
            "steps[0].set.new_checkout.enabled",
            "true or false",
        ),
        (
            [{"name": "f", "kind": "flags", "set": {"new_checkout": {"colour": "red"}}}],
            "steps[0].set.new_checkout.colour",
            "unknown field",
        ),
        ([{"name": "f", "kind": "flags", "set": {}}], "steps[0].set", "required"),
        (
            [{"name": "f", "kind": "flags", "set": {"new_checkout": {"enabled": True}}, "capture": True}],
            "steps[0].capture",
            "needs a flags rollback with states",
        ),
        (
            [{"name": "f", "kind": "flags", "set": {"new_checkout": {"enabled": True}}, "capture": "yes"}],
            "steps[0].capture",
            "true, on a flags step with set",
        ),
        ([{"name": "h", "kind": "http", "url": "ftp://example.test/"}], "steps[0].url", "http:// or https://"),
        ([{"name": "h", "kind": "http", "url": "http://x.test", "argv": ["x"]}], "steps[0].argv", "not a field"),
        ([{"name": "h", "kind": "http", "url": "http://x.test", "method": "TRACE"}], "steps[0].method", "one of"),
        ([{"name": "h", "kind": "http", "url": "http://x", "expected_status": 99}], "steps[0].expected_status", "100"),
        ([{"name": "g", "kind": "health_gate", "url": "http://x", "checks": "ready"}], "steps[0].checks", "not both"),
        ([{"name": "g", "kind": "health_gate", "interval": 0}], "steps[0].interval", "from 0.1 to 600"),
        ([{"name": "w", "kind": "wait"}], "steps[0].seconds", "required"),
        ({"name": "not a list"}, "steps", "JSON list"),
    ],
)  # fmt: skip
def test_an_invalid_step_is_refused_naming_the_field(steps, field, words):
    with pytest.raises(InvalidStep) as raised:
        validate_steps(steps)
    assert raised.value.field == field
    assert str(raised.value).startswith(f"{field}: ") and words in raised.value.message


def test_the_shipped_pipelines_and_plans_are_valid():
    assert validate_steps(PRODUCT_STEPS) is PRODUCT_STEPS
    assert validate_steps(DEMO_STEPS) is DEMO_STEPS
    for plan in RECOVERY_PLANS.values():
        validate_steps(plan["steps"])


# --- Running -------------------------------------------------------------------------------------


class Recorder:
    """A Context for one step run in the test, keeping what the step printed and the pids it started."""

    def __init__(self, health_url: str = "") -> None:
        self.chunks: list[str] = []
        self.pids: list[int] = []
        self.cancelled = threading.Event()
        self.context = Context(
            variables={
                "version": "v1.2.3",
                "environment": "staging",
                "deployment": "7",
                "python": sys.executable,
                "base_dir": str(settings.BASE_DIR),
            },
            output=self.chunks.append,
            started_process=self.pids.append,
            cancelled=self.cancelled,
            environment_health_url=health_url,
            actor_label="tests",
            secrets=secret_values(),
        )

    @property
    def output(self) -> str:
        return "".join(self.chunks)


@pytest.fixture
def secret(settings, monkeypatch):
    settings.DEPLOY_SECRETS = [SECRET]
    monkeypatch.setenv(SECRET, SECRET_VALUE)
    return SECRET_VALUE


def test_a_command_runs_with_the_variables_expanded():
    ctx = Recorder()
    step = command(
        argv=["{python}", "-c", "import sys; print('deploying', sys.argv[1:])", "{version}", "{environment}"]
    )
    assert run_step(step, ctx.context) == 0
    assert ctx.output == "deploying ['v1.2.3', 'staging']\n"
    assert len(ctx.pids) == 1


def test_a_command_that_does_not_exist_fails_with_command_not_found():
    ctx = Recorder()
    with pytest.raises(StepFailed) as raised:
        run_step(command(argv=["/nonexistent/deploy-tool", "--now"]), ctx.context)
    assert str(raised.value) == "command not found: /nonexistent/deploy-tool"
    assert raised.value.exit_code is None


def test_a_failing_command_reports_its_exit_code_and_output():
    ctx = Recorder()
    with pytest.raises(StepFailed) as raised:
        run_step(command(argv=["{python}", "-c", "import sys; print('boom'); sys.exit(4)"]), ctx.context)
    assert raised.value.exit_code == 4 and "exited with 4" in str(raised.value)
    assert ctx.output == "boom\n"


def _running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie nobody reaps here, with PID 1 not an init, is dead)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def test_a_command_that_times_out_has_its_whole_process_group_killed():
    ctx = Recorder()
    spawn = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "print('child', child.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    started = time.monotonic()
    with pytest.raises(StepFailed) as raised:
        run_step(command(argv=["{python}", "-c", spawn], timeout=1), ctx.context)
    assert time.monotonic() - started < 10
    assert "timed out after 1 s: the command's process group was killed" in str(raised.value)
    [parent] = ctx.pids
    child = int(ctx.output.split()[1])
    deadline = time.monotonic() + 5
    while (_running(parent) or _running(child)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _running(parent) and not _running(child)


def test_a_cancel_kills_a_running_command():
    ctx = Recorder()
    threading.Timer(0.5, ctx.cancelled.set).start()
    started = time.monotonic()
    with pytest.raises(StepCancelled, match="cancelled by an operator: the command's process group was killed"):
        run_step(command(argv=["{python}", "-c", "import time; time.sleep(60)"]), ctx.context)
    assert time.monotonic() - started < 10


def test_a_secret_expands_in_a_step_and_redact_hides_it(secret):
    ctx = Recorder()
    assert ctx.context.expand("Bearer ${TEST_DEPLOY_HOOK_TOKEN} for {version}") == f"Bearer {secret} for v1.2.3"
    assert secret in secret_values()
    run_step(
        command(argv=["{python}", "-c", "import sys; print(sys.argv[1])", "${TEST_DEPLOY_HOOK_TOKEN}"]), ctx.context
    )
    assert ctx.output == f"{secret}\n"  # the runner redacts what it stores; the step sees the value
    assert redact(ctx.output, ctx.context.secrets) == "[redacted]\n"
    assert secret not in redact(f"POST https://hooks.test/{secret}?x={secret}", secret_values())


def test_a_variable_not_listed_as_a_secret_is_never_expanded(settings, monkeypatch):
    settings.DEPLOY_SECRETS = []
    monkeypatch.setenv("HOME_GROWN_TOKEN", "not-for-steps")
    with pytest.raises(StepFailed) as raised:
        Recorder().context.expand("${HOME_GROWN_TOKEN}")
    assert "HOME_GROWN_TOKEN} is not a secret setting: list it in DEPLOY_SECRETS" in str(raised.value)


def test_a_listed_secret_that_is_not_set_fails_the_step(settings, monkeypatch):
    settings.DEPLOY_SECRETS = [SECRET]
    monkeypatch.delenv(SECRET, raising=False)
    with pytest.raises(StepFailed, match=f"the secret setting {SECRET} is not set"):
        run_step(command(argv=["/bin/echo", "${" + SECRET + "}"]), Recorder().context)


def test_an_http_step_sends_the_method_headers_and_body(http_sink, secret):
    ctx = Recorder()
    step = {
        "name": "backend deploy",
        "kind": "http",
        "method": "POST",
        "url": f"http://127.0.0.1:{http_sink.port}/deploy/{{environment}}",
        "headers": {"Authorization": "Bearer ${TEST_DEPLOY_HOOK_TOKEN}"},
        "body": {"version": "{version}"},
    }
    assert run_step(step, ctx.context) is None
    [received] = http_sink.requests
    assert (received.method, received.path) == ("POST", "/deploy/staging")
    assert received.headers["Authorization"] == f"Bearer {secret}"
    assert received.headers["Content-Type"] == "application/json"
    assert json.loads(received.body) == {"version": "v1.2.3"}
    assert ctx.output.startswith(f"POST http://127.0.0.1:{http_sink.port}/deploy/staging -> 200\n")


def test_an_http_step_fails_when_the_status_is_not_the_expected_one(http_sink):
    ctx = Recorder()
    url = f"http://127.0.0.1:{http_sink.port}/hook"
    with pytest.raises(StepFailed) as raised:
        run_step({"name": "h", "kind": "http", "method": "GET", "url": url, "expected_status": [201, 202]}, ctx.context)
    assert str(raised.value) == f"GET {url} answered 200, expected [201, 202]"
    http_sink.status = 503
    with pytest.raises(StepFailed, match="answered 503, expected 2xx"):
        run_step({"name": "h", "kind": "http", "url": url}, ctx.context)
    assert [r.method for r in http_sink.requests] == ["GET", "POST"]


def test_an_http_step_to_a_closed_port_fails():
    with pytest.raises(StepFailed, match="POST http://127.0.0.1:9/x: "):
        run_step({"name": "h", "kind": "http", "url": "http://127.0.0.1:9/x", "timeout": 2}, Recorder().context)


def test_a_health_gate_polls_until_healthy(http_sink):
    http_sink.status = 503
    threading.Timer(0.5, setattr, args=(http_sink, "status", 200)).start()
    ctx = Recorder(health_url=f"http://127.0.0.1:{http_sink.port}/health")  # no url: the environment's
    run_step({"name": "gate", "kind": "health_gate", "interval": 0.1, "timeout": 10}, ctx.context)
    lines = ctx.output.splitlines()
    assert len(lines) >= 2 and "not healthy" in lines[0] and "answered 503" in lines[0]
    assert lines[-1] == f"attempt {len(lines)}: healthy: http://127.0.0.1:{http_sink.port}/health answered 200"
    assert {r.path for r in http_sink.requests} == {"/health"}


def test_a_health_gate_fails_after_its_timeout(http_sink):
    http_sink.status = 500
    ctx = Recorder()
    url = f"http://127.0.0.1:{http_sink.port}/ready"
    started = time.monotonic()
    with pytest.raises(StepFailed) as raised:
        run_step({"name": "gate", "kind": "health_gate", "url": url, "interval": 0.2, "timeout": 1}, ctx.context)
    assert time.monotonic() - started < 3
    assert str(raised.value) == f"not healthy within 1 s: {url} answered 500"
    assert len(http_sink.requests) >= 3


def test_a_wait_step_stops_on_cancel():
    ctx = Recorder()
    threading.Timer(0.2, ctx.cancelled.set).start()
    started = time.monotonic()
    with pytest.raises(StepFailed, match="cancelled by an operator"):
        run_step({"name": "w", "kind": "wait", "seconds": 30}, ctx.context)
    assert time.monotonic() - started < 5
    assert ctx.output == "waiting 30 s\n"


def test_a_working_directory_that_does_not_exist_is_named_as_such():
    with pytest.raises(StepFailed) as raised:
        run_step(command(argv=["/bin/true"], cwd="/nonexistent/dir"), Recorder().context)
    assert "/nonexistent/dir" in str(raised.value) and "command not found" not in str(raised.value)
