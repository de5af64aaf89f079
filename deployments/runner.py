"""Runs a claimed deployment: steps in order, output stored as it arrives, a heartbeat, rollback on failure.

A deployment is run by whoever holds its ``claim``: the first worker takes it from ``queued`` with a
conditional update; the reaper takes a stale one with another. A runner that finds its claim gone
(the reaper decided it was lost) stops at once and leaves the rest to the new claimant. What a call came
to is a ``RunOutcome``.
"""

from __future__ import annotations

import json
import logging
import os
import secrets as random_tokens
import socket
import threading
import time
from datetime import datetime
from enum import StrEnum
from typing import Any

from django.conf import settings
from django.db import close_old_connections, connection, transaction
from django.utils import timezone

from controlplane.audit import Actor, audit_record
from deployments import backup_gate, silences
from deployments.models import (
    AnalysisMeasurement,
    Deployment,
    DeploymentStatus,
    Environment,
    LogLevel,
    Phase,
    StepRun,
    StepStatus,
)
from deployments.services import audit_state, log, notify_soon
from deployments.steps import (
    Context,
    StepFailed,
    current_states,
    describe,
    python,
    redact,
    run_step,
    secret_values,
)

logger = logging.getLogger(__name__)
ACTOR = Actor.system("deployment runner")


class RunOutcome(StrEnum):
    """What a call of the runner came to: the status it finished the deployment in, or why it stopped short."""

    SUCCEEDED = DeploymentStatus.SUCCEEDED.value
    FAILED = DeploymentStatus.FAILED.value
    ROLLED_BACK = DeploymentStatus.ROLLED_BACK.value
    ROLLBACK_FAILED = DeploymentStatus.ROLLBACK_FAILED.value
    CANCELLED = DeploymentStatus.CANCELLED.value
    NOT_CLAIMED = "not claimed"  # no longer queued (another worker took it), or no longer rolling back under this claim
    CLAIM_LOST = "claim lost"  # the reaper took it over mid-run; the new claimant finishes it


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def run(deployment_id: int) -> RunOutcome:
    """Claim a queued deployment and run it. A second claim of the same deployment does nothing."""
    claim = random_tokens.token_hex(8)
    now = timezone.now()
    claimed = Deployment.objects.filter(pk=deployment_id, status=DeploymentStatus.QUEUED).update(
        status=DeploymentStatus.RUNNING, started_at=now, heartbeat_at=now, worker=worker_name(), claim=claim
    )
    if not claimed:
        return RunOutcome.NOT_CLAIMED
    deployment = Deployment.objects.select_related("environment").get(pk=deployment_id)
    with transaction.atomic():
        log(deployment, f"started on {deployment.worker}")
        audit_record(actor=ACTOR, action="deployment.started", obj=deployment, after=audit_state(deployment))
        notify_soon(deployment)
    silences.hold(deployment)  # the pipeline's alert rules stay quiet until it ends (_finish releases them)
    return _Runner(deployment, claim).forward()


def continue_rollback(deployment_id: int, claim: str) -> RunOutcome:
    """Run the rollback of a deployment the reaper took over (its claim is ``claim``)."""
    claimed = Deployment.objects.filter(pk=deployment_id, status=DeploymentStatus.ROLLING_BACK, claim=claim).update(
        heartbeat_at=timezone.now(), worker=worker_name()
    )
    if not claimed:
        return RunOutcome.NOT_CLAIMED
    deployment = Deployment.objects.select_related("environment").get(pk=deployment_id)
    return _Runner(deployment, claim).rollback(cancelled=deployment.cancel_requested)


def _would(step: dict[str, Any], ctx: Context, secrets: list[str]) -> str:
    """A step of a dry run in words: what it would do, and what its rollback would."""
    gate = backup_gate.describe(step)
    text = f"would {gate + ' ' if gate else ''}{describe(step, ctx)}"
    if step.get("rollback"):
        text += f"; on a later failure would {describe(step['rollback'], ctx)}"
    return redact(text, secrets)


def dry_run_lines(steps: list[dict[str, Any]], *, version: str, environment: Environment) -> list[tuple[str, str]]:
    """(name, what it would do) per step, as a dry run's log says it, without queuing one: the page that
    runs a recovery plan shows this before it asks for the confirmation."""
    ctx = Context(
        variables={
            "version": version,
            "environment": environment.name,
            "deployment": "(new)",
            "python": python(),
            "base_dir": str(settings.BASE_DIR),
            "var_dir": str(settings.VAR_DIR),
        },
        output=lambda text: None,
        started_process=lambda pid: None,
        cancelled=threading.Event(),
        environment_health_url=environment.health_url,
        actor_label="dry run",
    )
    secrets = secret_values()
    return [(str(step.get("name", "?")), _would(step, ctx, secrets)) for step in steps]


class _Runner:
    def __init__(self, deployment: Deployment, claim: str) -> None:
        self.deployment = deployment
        self.claim = claim
        self.cancelled = threading.Event()  # an operator cancelled: stop the forward steps
        self.lost = threading.Event()  # our claim is gone: stop everything
        self.secrets = secret_values()
        self.variables = {
            "version": deployment.version,
            "environment": deployment.environment.name,
            "deployment": str(deployment.pk),
            "python": python(),
            "base_dir": str(settings.BASE_DIR),
            "var_dir": str(settings.VAR_DIR),
        }
        self._lock = threading.Lock()
        self._run: StepRun | None = None
        self._output: list[str] = []
        self._size = 0
        self._dirty = False
        self._truncated = False
        self._stop = threading.Event()
        # A guarded rollout's operator controls, as the heartbeat last read them from the row.
        self.paused = threading.Event()
        self.skip_requested_at: datetime | None = deployment.skip_requested_at
        if deployment.paused:
            self.paused.set()

    # --- the heartbeat thread: heartbeat, cancel flag, output flushes --------------------------

    def _beat(self) -> None:
        last_beat = 0.0
        try:
            while not self._stop.wait(settings.DEPLOY_OUTPUT_FLUSH_SECONDS):
                self._flush()
                if time.monotonic() - last_beat >= settings.DEPLOY_HEARTBEAT_SECONDS:
                    last_beat = time.monotonic()
                    alive = Deployment.objects.filter(pk=self.deployment.pk, claim=self.claim).update(
                        heartbeat_at=timezone.now()
                    )
                    if not alive:
                        self.lost.set()
                        self.cancelled.set()
                        return
                    cancel, paused, skip_at = (
                        Deployment.objects.filter(pk=self.deployment.pk)
                        .values_list("cancel_requested", "paused", "skip_requested_at")
                        .get()
                    )
                    if cancel:
                        self.cancelled.set()
                    (self.paused.set if paused else self.paused.clear)()
                    self.skip_requested_at = skip_at
        except Exception:  # the database went away: the main thread finds out on its next write
            logger.exception("deployment %s heartbeat failed", self.deployment.pk)
        finally:
            connection.close()

    def _start_heartbeat(self) -> threading.Thread:
        thread = threading.Thread(target=self._beat, name=f"deployment-{self.deployment.pk}-heartbeat", daemon=True)
        thread.start()
        return thread

    def _stop_heartbeat(self, thread: threading.Thread) -> None:
        self._stop.set()
        thread.join()
        self._flush()

    # --- output --------------------------------------------------------------------------------

    def _append(self, text: str) -> None:
        text = redact(text, self.secrets)
        with self._lock:
            self._output.append(text)
            self._size += len(text)
            self._dirty = True
            limit = settings.DEPLOY_STEP_OUTPUT_LIMIT
            if self._size > limit * 2:  # keep memory bounded; the stored text is cut to the limit at flush
                joined = "".join(self._output)[-limit:]
                self._output, self._size, self._truncated = [joined], len(joined), True

    def _started_process(self, pid: int) -> None:
        with self._lock:
            run_id = self._run.pk if self._run is not None else None
        if run_id is not None:
            StepRun.objects.filter(pk=run_id).update(pid=pid)

    def _flush(self) -> None:
        with self._lock:
            if not self._dirty or self._run is None:
                return
            text = "".join(self._output)
            limit = settings.DEPLOY_STEP_OUTPUT_LIMIT
            truncated = self._truncated or len(text) > limit
            text = text[-limit:]
            run_id, self._dirty = self._run.pk, False
        StepRun.objects.filter(pk=run_id).update(output=text, output_truncated=truncated)

    # --- steps ---------------------------------------------------------------------------------

    def _context(self, cancelled: threading.Event) -> Context:
        return Context(
            variables=self.variables,
            output=self._append,
            started_process=self._started_process,
            cancelled=cancelled,
            environment_health_url=self.deployment.environment.health_url,
            actor_label=f"deployment #{self.deployment.pk}",
            secrets=self.secrets,
            record=self._record,
            started_at=self.deployment.started_at,
            paused=self.paused.is_set,
            skipped_since=self._skipped_since,
            flag_action="flag.guarded_rollout." if self.deployment.flag else "flag.",
        )

    def _skipped_since(self, moment: datetime) -> bool:
        skip_at = self.skip_requested_at
        return skip_at is not None and skip_at > moment

    def _wait_while_paused(self) -> None:
        """A paused guarded rollout starts no step until it is resumed (or cancelled, or its claim lost)."""
        if not self.paused.is_set():
            return
        log(self.deployment, "paused: the next step waits until an operator resumes", level=LogLevel.WARNING)
        while self.paused.is_set() and not self.cancelled.wait(0.2):
            pass
        if not self.cancelled.is_set():
            log(self.deployment, "resumed")

    def _record(self, judged: list[Any], at: datetime) -> None:
        """An analysis round's measurements (``deployments.analysis.Judged``), stored with the running step."""
        with self._lock:
            run_id = self._run.pk if self._run is not None else None
        if run_id is None:
            return
        AnalysisMeasurement.objects.bulk_create(
            AnalysisMeasurement(
                step_run_id=run_id,
                condition=item.index,
                label=item.label[:200],
                at=at,
                value=item.value,
                threshold=item.threshold,
                baseline=item.baseline,
                requests=item.requests,
                verdict=item.verdict,
                detail=redact(item.detail, self.secrets)[:500],
            )
            for item in judged
        )

    def _begin(self, index: int, phase: str, step: dict[str, Any]) -> StepRun:
        run, created = StepRun.objects.update_or_create(
            deployment=self.deployment,
            phase=phase,
            index=index,
            defaults={
                "name": step["name"],
                "kind": step["kind"],
                "status": StepStatus.RUNNING,
                "started_at": timezone.now(),
                "finished_at": None,
                "exit_code": None,
                "pid": None,
                "output": "",
                "output_truncated": False,
                "error": "",
                "not_started": False,
            },
        )
        if not created:  # run again (a rollback the reaper resumed): its earlier measurements are not this run's
            AnalysisMeasurement.objects.filter(step_run=run).delete()
        with self._lock:
            self._run, self._output, self._size, self._dirty, self._truncated = run, [], 0, False, False
        return run

    def _execute(self, index: int, phase: str, step: dict[str, Any], cancelled: threading.Event) -> bool:
        run = self._begin(index, phase, step)
        label = f"rollback: {step['name']}" if phase == Phase.ROLLBACK else step["name"]
        log(self.deployment, f"{step['kind']} step started", step=label)
        exit_code: int | None = None
        error = ""
        try:
            ctx = self._context(cancelled)
            ctx.step_started_at = run.started_at
            if phase == Phase.FORWARD:
                try:
                    backup_gate.enforce(step, ctx)  # a refusal fails the step before any of it runs
                except StepFailed:
                    # Stored at once: whoever rolls back (this runner, or the reaper's after it dies) skips
                    # its own rollback, which would undo what never ran.
                    StepRun.objects.filter(pk=run.pk).update(not_started=True)
                    raise
            if phase == Phase.FORWARD and step.get("capture"):
                self._capture(index, step)
            exit_code = run_step(step, ctx)
        except StepFailed as exc:
            exit_code, error = exc.exit_code, redact(str(exc), self.secrets)
        except Exception as exc:  # a bug or a lost database in a step: the step fails, the rollback runs
            logger.exception("deployment %s step %s crashed", self.deployment.pk, step["name"])
            error = redact(f"{type(exc).__name__}: {exc}", self.secrets)
        self._flush()
        with self._lock:
            self._run = None
        finished = timezone.now()
        status = StepStatus.FAILED if error else StepStatus.SUCCEEDED
        StepRun.objects.filter(pk=run.pk).update(status=status, finished_at=finished, exit_code=exit_code, error=error)
        took = int((finished - run.started_at).total_seconds() * 1000)
        if error:
            log(self.deployment, f"failed after {took} ms: {error}", level=LogLevel.ERROR, step=label)
        else:
            log(self.deployment, f"succeeded in {took} ms", step=label)
        return not error

    def _capture(self, index: int, step: dict[str, Any]) -> None:
        """Record, on the row and before the step changes anything, the flags' states as they are now as its
        rollback's ``states``: a breach, an abort or the reaper (which reads the row) then restores what this
        step replaced, not what the flags were when the deployment was requested."""
        states = current_states(step, self.deployment.environment.name)
        steps = [dict(s) for s in self.deployment.steps]
        steps[index] = {**step, "rollback": {**step["rollback"], "states": states}}
        if not Deployment.objects.filter(pk=self.deployment.pk, claim=self.claim).update(steps=steps):
            raise StepFailed("the deployment was taken over: its flags are left as they are")
        self.deployment.steps = steps
        for name, state in states.items():
            self._append(f"flag {name}: state to restore on a rollback {json.dumps(state, sort_keys=True)}\n")

    # --- phases --------------------------------------------------------------------------------

    def forward(self) -> RunOutcome:
        steps = self.deployment.steps
        if self.deployment.dry_run:
            return self._dry_run(steps)
        heartbeat = self._start_heartbeat()
        failed_index: int | None = None
        try:
            for index, step in enumerate(steps):
                self._wait_while_paused()
                if self.cancelled.is_set():
                    failed_index = index - 1 if index else None
                    break
                if not self._execute(index, Phase.FORWARD, step, self.cancelled):
                    failed_index = index
                    break
        finally:
            self._stop_heartbeat(heartbeat)
        if self.lost.is_set():
            return RunOutcome.CLAIM_LOST
        if failed_index is None and not self.cancelled.is_set():
            return self._finish(DeploymentStatus.SUCCEEDED, "")
        cancelled = self.cancelled.is_set()
        moved = Deployment.objects.filter(pk=self.deployment.pk, claim=self.claim).update(
            status=DeploymentStatus.ROLLING_BACK,
            error="cancelled by an operator" if cancelled else self._failure_text(failed_index),
        )
        if not moved:
            return RunOutcome.CLAIM_LOST
        self.deployment.status = DeploymentStatus.ROLLING_BACK
        with transaction.atomic():
            log(
                self.deployment,
                "cancelled: rolling back" if cancelled else "a step failed: rolling back",
                level=LogLevel.WARNING,
            )
            # The rollback's start is a change of its own: the charts mark it (controlplane.changes).
            audit_record(
                actor=ACTOR, action="deployment.rolling_back", obj=self.deployment, after=audit_state(self.deployment)
            )
        return self.rollback(cancelled=cancelled)

    def _failure_text(self, index: int | None) -> str:
        run = self.deployment.step_runs.filter(phase=Phase.FORWARD, index=index).first() if index is not None else None
        return f"step {run.name} failed: {run.error}" if run else "a step failed"

    def rollback(self, *, cancelled: bool) -> RunOutcome:
        """Run the rollback actions: the failed step's own first, then the completed steps' in reverse."""
        forward = {run.index: run for run in self.deployment.step_runs.filter(phase=Phase.FORWARD)}
        never_started = {index for index, run in forward.items() if run.not_started}
        done = {
            run.index for run in self.deployment.step_runs.filter(phase=Phase.ROLLBACK, status=StepStatus.SUCCEEDED)
        }
        order = sorted(forward, reverse=True)  # the failed (last) step first, then back to the first one
        # A step the backup gate refused never ran: its own rollback (undoing a migration that was not
        # made) must not run either, whoever rolls back (``StepRun.not_started``).
        actions = [i for i in order if self.deployment.steps[i].get("rollback") is not None and i not in never_started]
        heartbeat = self._start_heartbeat()
        ok = True
        never_cancelled = threading.Event()  # a cancel stops the deployment, never its rollback
        try:
            for index in actions:
                if index in done:
                    continue
                if self.lost.is_set():
                    break
                action = self.deployment.steps[index]["rollback"]
                ok = self._execute(index, Phase.ROLLBACK, action, never_cancelled) and ok
        finally:
            self._stop_heartbeat(heartbeat)
        if self.lost.is_set():
            return RunOutcome.CLAIM_LOST
        if cancelled:
            return self._finish(DeploymentStatus.CANCELLED if ok else DeploymentStatus.ROLLBACK_FAILED, None)
        if not actions:
            log(self.deployment, "no completed step has a rollback action: nothing to undo", level=LogLevel.WARNING)
            return self._finish(DeploymentStatus.FAILED, None)
        return self._finish(DeploymentStatus.ROLLED_BACK if ok else DeploymentStatus.ROLLBACK_FAILED, None)

    def _dry_run(self, steps: list[dict[str, Any]]) -> RunOutcome:
        ctx = self._context(threading.Event())
        for index, step in enumerate(steps):
            run = self._begin(index, Phase.FORWARD, step)
            # Redacted as step output is: the description is stored and shown on the page, the API and the log.
            text = _would(step, ctx, self.secrets)
            StepRun.objects.filter(pk=run.pk).update(status=StepStatus.SKIPPED, finished_at=timezone.now(), output=text)
            log(self.deployment, text, step=step["name"])
        return self._finish(DeploymentStatus.SUCCEEDED, "")

    def _finish(self, status: str, error: str | None) -> RunOutcome:
        now: datetime = timezone.now()
        with transaction.atomic():
            fields: dict[str, Any] = {"status": status, "finished_at": now, "heartbeat_at": now}
            if error is not None:
                fields["error"] = error
            if not Deployment.objects.filter(pk=self.deployment.pk, claim=self.claim).update(**fields):
                return RunOutcome.CLAIM_LOST
            self.deployment.refresh_from_db()
            log(
                self.deployment,
                f"{self.deployment.get_status_display()}",
                level=LogLevel.INFO
                if status in (DeploymentStatus.SUCCEEDED, DeploymentStatus.ROLLED_BACK)
                else LogLevel.ERROR,
            )
            audit_record(
                actor=ACTOR, action=f"deployment.{status}", obj=self.deployment, after=audit_state(self.deployment)
            )
            notify_soon(self.deployment)
        silences.release(self.deployment)  # after commit: alerting ends each silence in a transaction of its own
        close_old_connections()
        return RunOutcome(status)
