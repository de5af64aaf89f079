"""Pipeline steps: their schema (checked before anything runs) and how each kind runs.

A step is a JSON object: ``name``, ``kind``, the kind's fields, an optional ``timeout`` (seconds) and an
optional ``rollback`` (another step, of any kind, run when a later step fails). Strings may use
``{version}``, ``{environment}``, ``{deployment}``, ``{python}`` (this interpreter), ``{base_dir}`` and
``{var_dir}`` (the control plane's data directory);
``${NAME}`` takes the value of the environment variable NAME, which must be listed in ``DEPLOY_SECRETS``
(its value is then redacted from every output and log line). The ``analysis`` kind's schema and run
are ``deployments.analysis``'s.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.conf import settings

from controlplane import outbound
from controlplane.errors import InvalidInput
from deployments import analysis

KINDS = ("command", "http", "health_gate", "backup", "migrate", "flags", "wait", "analysis")
DEFAULT_TIMEOUT = {
    "command": 600,
    "http": 30,
    "health_gate": 300,
    "backup": 3600,
    "migrate": 900,
    "flags": 30,
    "wait": 3600,
    "analysis": 0,  # computed from the step's duration: deployments.analysis.default_timeout
}
MIGRATE_ARGV = ["alembic", "upgrade", "head"]  # the product's backend (FastAPI, PostgreSQL) migrates with Alembic
HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
BASE_ENVIRONMENT = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR")
# ``${NAME}`` (a secret setting) or ``{name}`` (a deployment variable), found in one pass over the
# pipeline's own text: what replaces a reference is never scanned again, so a version (or any other
# value) holding "${NAME}" or "{version}" stays literal text.
_REFERENCE = re.compile(r"\$\{(?P<secret>[A-Z][A-Z0-9_]*)\}|\{(?P<variable>[A-Za-z_][A-Za-z0-9_]*)\}")
# The rules of a pipeline, for the admin's steps box, the services and the API schemas alike.
MAX_STEPS = 100
MAX_STEP_NAME_LENGTH = 100
# Used with fullmatch: "^...$" would let a final newline through.
STEP_NAME_PATTERN = re.compile(rf"[A-Za-z0-9][A-Za-z0-9 _.:-]{{0,{MAX_STEP_NAME_LENGTH - 1}}}")
STEP_NAME_RULE = f"required: 1 to {MAX_STEP_NAME_LENGTH} letters, digits, spaces or _ . : -"


class InvalidStep(InvalidInput):
    """A step definition that cannot run; ``field`` is its path, e.g. ``steps[2].argv``."""


class StepFailed(Exception):
    def __init__(self, message: str, *, exit_code: int | None = None) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class StepCancelled(StepFailed):
    pass


# --- Schema --------------------------------------------------------------------------------------

_FIELDS = {
    "command": {"argv", "cwd", "env"},
    "migrate": {"argv", "cwd", "env"},
    "http": {"method", "url", "headers", "body", "expected_status"},
    "health_gate": {"url", "checks", "interval", "expected_status"},
    "backup": {"target", "verify"},
    "flags": {"set", "states", "capture"},
    "wait": {"seconds"},
    "analysis": analysis.FIELDS,
}
_COMMON = {"name", "kind", "timeout", "rollback"}
# The backup gate's fields (deployments.backup_gate): any step may ask for a restorable backup first.
_COMMON |= {"requires_verified_backup", "backup_target", "take_backup"}
# What people write from other tools' pipelines (GitHub Actions, Ansible, docker-compose...), which a
# spelling match cannot guess ("command" and "argv" share no letters worth a match).
_FIELD_ALIASES = {
    "command": "argv", "cmd": "argv", "args": "argv", "run": "argv", "exec": "argv", "script": "argv",
    "dir": "cwd", "directory": "cwd", "workdir": "cwd", "working_directory": "cwd", "working_dir": "cwd",
    "environment": "env", "vars": "env", "variables": "env",
    "uri": "url", "endpoint": "url", "hook": "url", "webhook": "url",
    "status": "expected_status", "status_code": "expected_status", "expect": "expected_status",
    "data": "body", "json": "body", "payload": "body",
    "duration": "seconds", "delay": "seconds", "sleep": "seconds",
    "database": "target", "db": "target",
    "flags": "set", "values": "set",
    "type": "kind", "title": "name", "undo": "rollback", "revert": "rollback", "on_failure": "rollback",
    "timeout_seconds": "timeout",
}  # fmt: skip
_KIND_ALIASES = {
    "shell": "command", "exec": "command", "run": "command", "script": "command", "cmd": "command",
    "webhook": "http", "request": "http", "hook": "http",
    "health": "health_gate", "healthcheck": "health_gate", "health_check": "health_gate", "gate": "health_gate",
    "migration": "migrate", "flag": "flags", "sleep": "wait", "pause": "wait", "dump": "backup",
    "analyse": "analysis", "analyze": "analysis", "canary": "analysis", "verify": "analysis",
}  # fmt: skip


def did_you_mean(given: str, known: Any, aliases: dict[str, str]) -> str:
    """The hint '; did you mean X?' for a misspelt or borrowed name, or '' when nothing known is close."""
    candidates = list(known)
    if not isinstance(given, str):
        return ""
    alias = aliases.get(given.strip().lower())
    if alias in candidates:
        return f"; did you mean {alias}?"
    close = difflib.get_close_matches(given.lower(), candidates, n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else ""


def validate_steps(steps: Any, *, prefix: str = "steps") -> list[dict[str, Any]]:
    """Check a whole pipeline; raises InvalidStep naming the first wrong field. Returns the steps."""
    if not isinstance(steps, list):
        raise InvalidStep(prefix, "must be a JSON list of steps")
    if len(steps) > MAX_STEPS:
        raise InvalidStep(prefix, f"at most {MAX_STEPS} steps")
    names = set()
    for index, step in enumerate(steps):
        validate_step(step, f"{prefix}[{index}]")
        if step["name"] in names:
            raise InvalidStep(f"{prefix}[{index}].name", f"{step['name']!r} is used twice")
        names.add(step["name"])
    return steps


def validate_step(step: Any, where: str, *, nested: bool = False) -> None:
    if not isinstance(step, dict):
        raise InvalidStep(where, "must be a JSON object")
    name = step.get("name")
    if not isinstance(name, str) or not STEP_NAME_PATTERN.fullmatch(name):
        raise InvalidStep(f"{where}.name", STEP_NAME_RULE)
    kind = step.get("kind")
    if kind not in KINDS:
        guess = did_you_mean(kind, KINDS, _KIND_ALIASES) if isinstance(kind, str) else ""
        raise InvalidStep(f"{where}.kind", f"unknown kind {kind!r}; one of {', '.join(KINDS)}{guess}")
    unknown = sorted(set(step) - _COMMON - _FIELDS[kind])
    if unknown:
        aliases = analysis.STEP_ALIASES if kind == "analysis" else _FIELD_ALIASES
        guess = did_you_mean(unknown[0], sorted((_COMMON | _FIELDS[kind]) - step.keys()), aliases)
        article = "an" if kind[0] in "aeiou" else "a"
        raise InvalidStep(f"{where}.{unknown[0]}", f"not a field of {article} {kind} step{guess}")
    if "timeout" in step:
        timeout = step["timeout"]
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0 or timeout > 86400:
            raise InvalidStep(f"{where}.timeout", "seconds, more than 0 and at most 86400")
    if "rollback" in step:
        if nested:
            raise InvalidStep(f"{where}.rollback", "a rollback action has no rollback of its own")
        validate_step(step["rollback"], f"{where}.rollback", nested=True)
    _KIND_CHECKS[kind](step, where)
    _check_backup_gate(step, where, nested=nested)


def _check_backup_gate(step: dict[str, Any], where: str, *, nested: bool) -> None:
    from deployments.backup_gate import check_fields  # it imports this module

    check_fields(step, where, nested=nested)


def _strings(value: Any, where: str, *, allow_empty: bool = False) -> None:
    if not isinstance(value, list) or (not value and not allow_empty):
        raise InvalidStep(where, "required: a non-empty list of strings" if not allow_empty else "a list of strings")
    for index, item in enumerate(value):
        if not isinstance(item, str) or not item:
            raise InvalidStep(f"{where}[{index}]", "must be a non-empty string")


def _mapping(value: Any, where: str) -> None:
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise InvalidStep(where, "must be an object of strings")


def _url(value: Any, where: str, *, required: bool = True) -> None:
    if value is None and not required:
        return
    if not isinstance(value, str) or not re.match(r"^(https?://[^\s/]+\S*|\$\{[A-Z][A-Z0-9_]*\}\S*)$", value):
        raise InvalidStep(where, "required: an http:// or https:// URL" if required else "an http:// or https:// URL")


def _status_codes(value: Any, where: str) -> None:
    codes = value if isinstance(value, list) else [value]
    if not codes or not all(isinstance(c, int) and not isinstance(c, bool) and 100 <= c <= 599 for c in codes):
        raise InvalidStep(where, "an HTTP status (100-599) or a list of them")


def _check_command(step: dict[str, Any], where: str) -> None:
    if step["kind"] == "command" or "argv" in step:
        _strings(step.get("argv"), f"{where}.argv")
    if "cwd" in step and (not isinstance(step["cwd"], str) or not step["cwd"]):
        raise InvalidStep(f"{where}.cwd", "must be a directory path")
    if "env" in step:
        _mapping(step["env"], f"{where}.env")


def _check_http(step: dict[str, Any], where: str) -> None:
    _url(step.get("url"), f"{where}.url")
    if step.get("method", "POST") not in HTTP_METHODS:
        raise InvalidStep(f"{where}.method", f"one of {', '.join(HTTP_METHODS)}")
    if "headers" in step:
        _mapping(step["headers"], f"{where}.headers")
    if "expected_status" in step:
        _status_codes(step["expected_status"], f"{where}.expected_status")


def _check_health_gate(step: dict[str, Any], where: str) -> None:
    _url(step.get("url"), f"{where}.url", required=False)
    if "checks" in step and step["checks"] not in ("ready", "enhanced", "comprehensive"):
        raise InvalidStep(f"{where}.checks", "the control plane's check group: ready, enhanced or comprehensive")
    if "url" in step and "checks" in step:
        raise InvalidStep(f"{where}.checks", "a gate polls a url or runs the checks, not both")
    interval = step.get("interval", 5)
    if isinstance(interval, bool) or not isinstance(interval, int | float) or not 0.1 <= interval <= 600:
        raise InvalidStep(f"{where}.interval", "seconds between polls, from 0.1 to 600")
    if "expected_status" in step:
        _status_codes(step["expected_status"], f"{where}.expected_status")


def _check_backup(step: dict[str, Any], where: str) -> None:
    target = step.get("target", "default")
    if not isinstance(target, str) or not target:
        raise InvalidStep(f"{where}.target", "the name of a backup target")
    if "verify" in step and not isinstance(step["verify"], bool):
        raise InvalidStep(f"{where}.verify", "true or false: verify the backup once taken")


def _check_flags(step: dict[str, Any], where: str) -> None:
    """``set`` (today's fields of each flag) or ``states`` (each flag's whole state, as a state document:
    what a guarded rollout restores), in the deployment's environment."""
    from flags.definitions import DocumentError, clean_state
    from flags.services import InvalidFlagDefinition, clean_fields

    if "capture" in step:
        rollback = step.get("rollback")
        if step["capture"] is not True or "set" not in step:
            raise InvalidStep(f"{where}.capture", "true, on a flags step with set (or left out)")
        if not isinstance(rollback, dict) or rollback.get("kind") != "flags" or "states" not in rollback:
            raise InvalidStep(f"{where}.capture", "needs a flags rollback with states: the states it records")
    if "states" in step:
        if "set" in step:
            raise InvalidStep(f"{where}.states", "a flags step takes set or states, not both")
        states = step["states"]
        if not isinstance(states, dict) or not states:
            raise InvalidStep(f"{where}.states", 'required: {"flag_name": {"enabled": true, "strategies": [...]}}')
        for flag, state in states.items():
            try:
                clean_state(state, f"{where}.states.{flag}")
            except DocumentError as exc:
                raise InvalidStep(exc.field, exc.message) from None
        return
    changes = step.get("set")
    if not isinstance(changes, dict) or not changes:
        raise InvalidStep(f"{where}.set", 'required: {"flag_name": {"enabled": true, "rollout_percent": 50}, ...}')
    for flag, values in changes.items():
        try:
            clean_fields(values, allowed=("enabled", "rollout_percent", "targeting_keys"), flag=flag)
        except InvalidFlagDefinition as exc:
            raise InvalidStep(f"{where}.set.{flag}.{exc.field}", exc.message) from None


def _check_wait(step: dict[str, Any], where: str) -> None:
    seconds = step.get("seconds")
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not 0 <= seconds <= 3600:
        raise InvalidStep(f"{where}.seconds", "required: seconds, from 0 to 3600")


_KIND_CHECKS: dict[str, Callable[[dict[str, Any], str], None]] = {
    "command": _check_command,
    "migrate": _check_command,
    "http": _check_http,
    "health_gate": _check_health_gate,
    "backup": _check_backup,
    "flags": _check_flags,
    "wait": _check_wait,
    "analysis": analysis.check_step,
}


# --- Running -------------------------------------------------------------------------------------


def secret_values() -> list[str]:
    """The values to redact: every variable named in DEPLOY_SECRETS, longest first."""
    values = [os.environ.get(name, "") for name in settings.DEPLOY_SECRETS]
    return sorted((v for v in values if len(v) >= 4), key=len, reverse=True)


def redact(text: str, secrets: list[str]) -> str:
    for value in secrets:
        text = text.replace(value, "[redacted]")
    return text


@dataclass
class Context:
    """What a running step may use: the deployment's variables, output and cancel signal."""

    variables: dict[str, str]
    output: Callable[[str], None]  # append text to the step's output (redacted by the caller)
    started_process: Callable[[int], None]  # told the pid (= process group) of a command
    cancelled: threading.Event
    environment_health_url: str
    actor_label: str
    secrets: list[str] = field(default_factory=list)
    # An analysis step's measurements, stored with the step run; and when the deployment started (its baseline).
    record: Callable[[list[Any], datetime], None] = field(default=lambda _judged, _at: None)
    started_at: datetime | None = None
    # A guarded rollout's operator controls (``deployments.guarded``): whether it is paused now, and whether
    # a "skip ahead" came after a given moment (a hold that started before it ends at once).
    paused: Callable[[], bool] = field(default=lambda: False)
    skipped_since: Callable[[datetime], bool] = field(default=lambda _since: False)
    step_started_at: datetime | None = None  # when the running step's run began (a skip after it ends a hold)
    # The audit action prefix of the flags steps' changes ("flag.guarded_rollout." for a guarded rollout's).
    flag_action: str = "flag."

    def expand(self, text: str, *, secrets: bool = True) -> str:
        """The step's ``text`` with its ``{variable}`` and ``${SECRET}`` references replaced, in one pass.

        Only the pipeline's own text is ever scanned: a value put in (the version, a secret) is not,
        else a version of "${SOME_SECRET}" would read any secret setting. With ``secrets=False`` the
        ``${NAME}`` references stay as written (what a dry run shows).
        """

        def replace(match: re.Match) -> str:
            variable = match.group("variable")
            if variable is not None:
                return self.variables.get(variable, match.group(0))
            name = match.group("secret")
            if not secrets:
                return match.group(0)
            if name not in settings.DEPLOY_SECRETS:
                raise StepFailed(f"${{{name}}} is not a secret setting: list it in DEPLOY_SECRETS")
            value = os.environ.get(name)
            if value is None:
                raise StepFailed(f"the secret setting {name} is not set in the environment")
            return value

        return _REFERENCE.sub(replace, text)

    def sleep(self, seconds: float, *, skippable_since: datetime | None = None) -> None:
        """Wait ``seconds``; a cancel raises StepCancelled at once. With ``skippable_since``, an operator's
        "skip ahead" made after that moment ends the wait early (the caller asks ``skipped_since`` again)."""
        if skippable_since is None:
            if self.cancelled.wait(seconds):
                raise StepCancelled("cancelled by an operator")
            return
        deadline = time.monotonic() + seconds
        while True:
            left = deadline - time.monotonic()
            if self.cancelled.wait(max(0.0, min(0.2, left))):
                raise StepCancelled("cancelled by an operator")
            if left <= 0.2 or self.skipped_since(skippable_since):
                return


def run_step(step: dict[str, Any], ctx: Context) -> int | None:
    """Run one step to the end. Returns an exit code (commands) or None; raises StepFailed."""
    kind = step["kind"]
    default = analysis.default_timeout(step) if kind == "analysis" else DEFAULT_TIMEOUT[kind]
    timeout = float(step.get("timeout", default))
    if kind in ("command", "migrate"):
        argv = step.get("argv") or MIGRATE_ARGV
        return _run_command(argv, step, ctx, timeout)
    if kind == "http":
        _run_http(step, ctx, timeout)
    elif kind == "health_gate":
        _run_health_gate(step, ctx, timeout)
    elif kind == "backup":
        _run_backup(step, ctx)
    elif kind == "flags":
        _run_flags(step, ctx)
    elif kind == "wait":
        ctx.output(f"waiting {step['seconds']} s\n")
        ctx.sleep(float(step["seconds"]))
    elif kind == "analysis":
        analysis.run(step, ctx, timeout)
    return None


def describe(step: dict[str, Any], ctx: Context) -> str:
    """What the step would do, for dry runs (secrets stay unexpanded; the runner redacts the text too)."""
    kind = step["kind"]
    show = lambda text: ctx.expand(text, secrets=False)  # noqa: E731
    if kind in ("command", "migrate"):
        argv = [show(a) for a in (step.get("argv") or MIGRATE_ARGV)]
        return f"run {json.dumps(argv)}" + (f" in {show(step['cwd'])}" if step.get("cwd") else "")
    if kind == "http":
        return f"{step.get('method', 'POST')} {show(step['url'])} expecting {step.get('expected_status', '2xx')}"
    if kind == "health_gate":
        # Only the step's own url is pipeline text to expand; the environment's health URL is shown as set.
        what = show(step["url"]) if step.get("url") else None
        what = what or (f"the control plane's {step['checks']} checks" if "checks" in step else None)
        what = what or ctx.environment_health_url or "the control plane's ready checks"
        every, most = step.get("interval", 5), step.get("timeout", 300)
        return f"wait until {what} is healthy (every {every} s, at most {most} s)"
    if kind == "backup":
        verified = " and verify it" if step.get("verify") else ""
        return f"back up target {step.get('target', 'default')}{verified} and wait for it"
    if kind == "flags":
        where = f" in {ctx.variables.get('environment')}" if ctx.variables.get("environment") else ""
        if "states" in step:
            return f"restore the whole state of flag(s) {', '.join(sorted(step['states']))}{where}"
        return "set flags " + json.dumps(step["set"], sort_keys=True) + where
    if kind == "analysis":
        return analysis.describe(step)
    return f"wait {step['seconds']} s"


def _run_command(argv: list[str], step: dict[str, Any], ctx: Context, timeout: float) -> int:
    args = [ctx.expand(arg) for arg in argv]
    # Not the worker's environment (it holds the control plane's own secrets): the basics, plus what
    # the step names, with ${SECRET} values expanded from DEPLOY_SECRETS.
    env = {name: os.environ[name] for name in BASE_ENVIRONMENT if name in os.environ}
    env.update({k: ctx.expand(v) for k, v in step.get("env", {}).items()})
    cwd = ctx.expand(step["cwd"]) if step.get("cwd") else None
    try:
        process = subprocess.Popen(  # noqa: S603 - an argv list, never a shell
            args,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: timeout and cancel kill all of it
        )
    except FileNotFoundError as exc:
        if cwd is not None and exc.filename == cwd:  # Popen names the missing directory, not the command
            raise StepFailed(f"cannot start {args[0]}: no directory {cwd}") from None
        raise StepFailed(f"command not found: {args[0]}") from None
    except (PermissionError, NotADirectoryError, OSError) as exc:
        raise StepFailed(f"cannot start {args[0]}: {exc.strerror or exc}") from None
    ctx.started_process(process.pid)
    stop = threading.Event()
    reason: list[str] = []

    def watch() -> None:
        deadline = time.monotonic() + timeout
        while not stop.is_set():
            if ctx.cancelled.is_set():
                reason.append("cancelled by an operator")
                break
            if time.monotonic() >= deadline:
                reason.append(f"timed out after {timeout:g} s")
                break
            stop.wait(0.1)
        else:
            return
        kill_group(process)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        assert process.stdout is not None
        for raw in iter(process.stdout.readline, b""):
            ctx.output(raw.decode("utf-8", "replace"))
        code = process.wait()
    finally:
        stop.set()
        watcher.join()
        if process.poll() is None:
            kill_group(process)
            process.wait()
        process.stdout.close()  # type: ignore[union-attr]
    if reason:
        error = StepCancelled if reason[0].startswith("cancelled") else StepFailed
        raise error(f"{reason[0]}: the command's process group was killed", exit_code=code)
    if code != 0:
        raise StepFailed(f"{os.path.basename(args[0])} exited with {code}", exit_code=code)
    return code


def kill_group(process: subprocess.Popen) -> None:
    """SIGTERM to the whole process group, SIGKILL to what is left two seconds later."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=2)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


def _http(method: str, url: str, headers: dict[str, str], body: bytes | None, timeout: float) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, headers=headers, method=method)  # noqa: S310 - http(s) only
    try:
        with outbound.opener.open(request, timeout=timeout) as response:
            return response.status, response.read(65536)
    except urllib.error.HTTPError as error:
        return error.code, error.read(65536)  # an HTTPError without a body reads as b""
    except (urllib.error.URLError, TimeoutError, OSError) as error:
        raise StepFailed(f"{method} {url}: {getattr(error, 'reason', error)}") from None


def _expected(step: dict[str, Any], status: int) -> bool:
    expected = step.get("expected_status")
    if expected is None:
        return 200 <= status < 300
    return status in (expected if isinstance(expected, list) else [expected])


def _run_http(step: dict[str, Any], ctx: Context, timeout: float) -> None:
    method = step.get("method", "POST")
    url = ctx.expand(step["url"])
    if not url.startswith(("http://", "https://")):
        raise StepFailed("the URL is not http:// or https:// once expanded")
    headers = {"User-Agent": "controlplane-deploy/1", **{k: ctx.expand(v) for k, v in step.get("headers", {}).items()}}
    body = None
    if "body" in step:
        body = ctx.expand(json.dumps(step["body"])).encode()
        headers.setdefault("Content-Type", "application/json")
    status, content = _http(method, url, headers, body, timeout)
    ctx.output(f"{method} {url} -> {status}\n{content[:2000].decode('utf-8', 'replace')}\n")
    if not _expected(step, status):
        raise StepFailed(f"{method} {url} answered {status}, expected {step.get('expected_status', '2xx')}")


def _run_health_gate(step: dict[str, Any], ctx: Context, timeout: float) -> None:
    interval = float(step.get("interval", 5))
    url = ctx.expand(step["url"]) if step.get("url") else ("" if "checks" in step else ctx.environment_health_url)
    deadline = time.monotonic() + timeout
    attempt = 0
    while True:
        attempt += 1
        healthy, detail = _probe(url, step, min(10.0, max(1.0, interval * 2)))
        ctx.output(f"attempt {attempt}: {'healthy' if healthy else 'not healthy'}: {detail}\n")
        if healthy:
            return
        if time.monotonic() + interval > deadline:
            raise StepFailed(f"not healthy within {timeout:g} s: {detail}")
        ctx.sleep(interval)


def _probe(url: str, step: dict[str, Any], timeout: float) -> tuple[bool, str]:
    if url:
        try:
            status, _ = _http("GET", url, {"User-Agent": "controlplane-deploy/1"}, None, timeout)
        except StepFailed as exc:
            return False, str(exc)
        expected = step.get("expected_status", 200)
        return status in (expected if isinstance(expected, list) else [expected]), f"{url} answered {status}"
    from monitoring.checks import FAIL, run_group, worst

    results = run_group(step.get("checks", "ready"))
    failing = [f"{r.component}: {r.output}" for r in results if r.status == FAIL]
    overall = worst(r.status for r in results)
    return overall != FAIL, "; ".join(failing) if failing else f"{len(results)} checks, {overall}"


def _run_backup(step: dict[str, Any], ctx: Context) -> None:
    from backups.models import BackupStatus, BackupTarget
    from backups.services import AlreadyRunning, backup_create
    from controlplane.audit import Actor

    name = step.get("target", "default")
    target = BackupTarget.objects.filter(name=name).first()
    if target is None:
        raise StepFailed(f"no backup target named {name!r}")
    try:
        backup = backup_create(target=target, actor=Actor.system(ctx.actor_label))
    except AlreadyRunning as exc:
        raise StepFailed(str(exc)) from None
    if backup.status != BackupStatus.SUCCEEDED:
        raise StepFailed(f"backup #{backup.pk} of {name} failed: {backup.error}")
    ctx.output(f"backup #{backup.pk} of {name}: {backup.size_bytes} bytes, sha256 {backup.sha256}\n")
    if step.get("verify"):
        from deployments.backup_gate import verify_backup  # it imports this module

        verify_backup(backup, ctx)


def _run_flags(step: dict[str, Any], ctx: Context) -> None:
    """Set flags in the deployment's environment (``{environment}``), audited as the deployment's."""
    from controlplane.audit import Actor
    from flags.services import EnvironmentNotFound, FlagNotFound, InvalidFlagDefinition, flag_state_set, flag_update

    environment = ctx.variables.get("environment") or None
    actor = Actor.system(ctx.actor_label)
    try:
        for name, state in step.get("states", {}).items():
            flag_state_set(
                name=name, environment=environment or "production", state=state, actor=actor,
                action=f"{ctx.flag_action}state.update",
            )  # fmt: skip
            ctx.output(f"flag {name} in {environment}: state restored {json.dumps(state, sort_keys=True)}\n")
        for name, changes in step.get("set", {}).items():
            flag_update(
                name=name, changes=changes, actor=actor, action=f"{ctx.flag_action}update", environment=environment
            )
            ctx.output(f"flag {name} in {environment}: {json.dumps(changes, sort_keys=True)}\n")
    except (FlagNotFound, InvalidFlagDefinition, EnvironmentNotFound) as exc:
        raise StepFailed(str(exc)) from None


def current_states(step: dict[str, Any], environment: str) -> dict[str, Any]:
    """The whole state now (a state document) of each flag ``step`` sets in ``environment``: what a flags
    step marked ``capture`` records as its rollback's ``states`` just before it changes them."""
    from flags.definitions import state_doc
    from flags.models import FlagState

    states: dict[str, Any] = {}
    for name in step.get("set", {}):
        state = FlagState.objects.filter(flag__name=name, environment__name=environment).first()
        states[name] = state_doc(state) if state is not None else {"enabled": False, "strategies": [], "variants": []}
    return states


def python() -> str:
    return sys.executable
