"""Every write to deployments: environments and pipelines, requesting, cancelling, rolling back, reaping.

The runner (``deployments.runner``) executes a claimed deployment; everything an operator or a token
asks for comes through here, is validated, audited, and queued after commit.
"""

from __future__ import annotations

import functools
import logging
import re
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from controlplane.audit import Actor, audit_record, snapshot
from controlplane.errors import Conflict, ControlPlaneError, InvalidInput, NotFound
from controlplane.models import Environment as GroundEnvironment
from controlplane.redaction import redact_text
from deployments.models import (
    FINISHED,
    Deployment,
    DeploymentStatus,
    DeploymentType,
    Environment,
    LogLevel,
    LogLine,
    Phase,
    Pipeline,
    RecoveryPlan,
    StepRun,
    StepStatus,
)
from deployments.steps import InvalidStep, validate_steps

logger = logging.getLogger(__name__)
# The one rule for a version (clean_version), declared here for every caller and the API schemas.
MAX_VERSION = 128
# Used with fullmatch: "^...$" would let a final newline through.
VERSION_PATTERN = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._+-]{{0,{MAX_VERSION - 1}}}")
VERSION_RULE = (
    f"at most {MAX_VERSION} characters: letters, digits, '.', '_', '+' and '-', starting with a letter or digit,"
    " no '..'"
)


class InvalidDeployment(InvalidInput):
    """Bad input to a deployment request; ``field`` names what is wrong (mapped to 422)."""


class NoRecoveryPlan(InvalidDeployment, NotFound):
    """No recovery plan for the failure type asked for: a 404, since the type is in the URL. Still an
    InvalidDeployment (field ``type``), so that callers catching bad deployment input keep catching it."""

    status = 404
    code = "not_found"


class DeploymentLocked(Conflict):
    """The environment has an active deployment (409); the answer points at it."""

    code = "locked"

    def __init__(self, active: Deployment) -> None:
        super().__init__(
            f"{active.environment.name} is locked by deployment #{active.pk} ({active.status})",
            active={"id": active.pk, "url": active.get_absolute_url()},
        )
        # The row itself, for the pages that open it (``extra["active"]`` is what the JSON answer shows).
        self.active = active


class NotCancellable(Conflict):
    """The deployment has finished, or is rolling back: there is nothing left to cancel (409)."""

    code = "not_cancellable"


def log(deployment: Deployment | int, message: str, *, level: str = LogLevel.INFO, step: str = "") -> None:
    deployment_id = deployment if isinstance(deployment, int) else deployment.pk
    LogLine.objects.create(deployment_id=deployment_id, level=level, step=step[:100], message=message)


# --- Pipelines and environments ------------------------------------------------------------------


def _save_by_name(model: Any, *, name: str, values: dict[str, Any], actor: Actor) -> Any:
    """Create or update the row of ``model`` named ``name`` with ``values``, checked and audited."""
    label = model._meta.model_name
    with transaction.atomic():
        row = model.objects.select_for_update().filter(name=name).first()
        before = snapshot(row) if row else None
        row = row or model(name=name)
        for field, value in values.items():
            setattr(row, field, value)
        row.full_clean(exclude=["steps"])  # steps are checked against their own schema
        row.save()
        audit_record(
            actor=actor,
            action=f"{label}.update" if before else f"{label}.create",
            obj=row,
            before=before,
            after=snapshot(row),
        )
    return row


def pipeline_save(*, name: str, steps: Any, description: str = "", silence_rules: Any = None, actor: Actor) -> Pipeline:
    """Create or replace a pipeline; the steps are checked against the schema first, the alert rules it
    silences while it runs against alerting's rules (``None`` keeps the pipeline's, none for a new one)."""
    try:
        validate_steps(steps)
    except InvalidStep as exc:
        raise InvalidDeployment(exc.field, exc.message) from None
    values: dict[str, Any] = {"steps": steps, "description": description}
    if silence_rules is not None:
        values["silence_rules"] = clean_silence_rules(silence_rules)
    return _save_by_name(Pipeline, name=name, values=values, actor=actor)


def clean_silence_rules(names: Any) -> list[str]:
    """A pipeline's ``silence_rules``: a list of the names of existing alert rules, each once."""
    from alerting.selectors import rule_names, unknown_rule_names

    if not isinstance(names, list):
        raise InvalidDeployment("silence_rules", 'a JSON list of alert rule names, e.g. ["backend up"]')
    for index, rule in enumerate(names):
        if not isinstance(rule, str) or not rule.strip():
            raise InvalidDeployment(f"silence_rules[{index}]", "must be the name of an alert rule")
        if rule in names[:index]:
            raise InvalidDeployment(f"silence_rules[{index}]", f"{rule!r} is named twice")
    unknown = unknown_rule_names(names)
    if unknown:
        index = names.index(unknown[0])
        known = ", ".join(rule_names()) or "none"
        raise InvalidDeployment(f"silence_rules[{index}]", f"no alert rule named {unknown[0]!r} (rules: {known})")
    return names


def environment_save(*, name: str, pipeline: Pipeline, health_url: str = "", actor: Actor) -> Environment:
    """Set the pipeline and health URL of the environment ``name`` (the ground's, made if missing)."""
    ground = GroundEnvironment.objects.ensure(name)
    values = {"environment": ground, "pipeline": pipeline, "health_url": health_url}
    return _save_by_name(Environment, name=name, values=values, actor=actor)


# --- Requests ------------------------------------------------------------------------------------


def clean_version(version: Any) -> str:
    """The one rule for a version, whoever asks (API, page, admin, command, rollback, recovery).

    A version ends up in argv, URLs, JSON bodies and paths of steps, so it is a plain release name:
    no "$" or braces (references), no leading "-" (an option), no "/" or ".." (a path), no quotes
    or spaces. Not stripped: what is deployed is exactly what was asked for.
    """
    if not isinstance(version, str) or not version.strip():
        raise InvalidDeployment("version", "required: a non-empty string")
    if VERSION_PATTERN.fullmatch(version) is None or ".." in version:
        raise InvalidDeployment("version", VERSION_RULE)
    return version


def _environment(name: Any) -> Environment:
    if not isinstance(name, str) or not name:
        raise InvalidDeployment("environment", "required: the name of an environment")
    environment = Environment.objects.select_related("pipeline").filter(name=name).first()
    if environment is None:
        known = ", ".join(Environment.objects.values_list("name", flat=True)) or "none"
        raise InvalidDeployment("environment", f"no environment named {name!r} (environments: {known})")
    return environment


def deployment_request(
    *,
    environment: Any,
    version: Any,
    actor: Actor,
    type: Any = DeploymentType.DEPLOY,
    steps: list[dict[str, Any]] | None = None,
    recovery_type: str = "",
    dry_run: bool = False,
) -> Deployment:
    """Queue a deployment of ``version`` to ``environment``; the worker runs it after commit.

    Raises InvalidDeployment (bad input), DeploymentLocked (another one is active: a database
    constraint decides, so two requests at once cannot both pass).
    """
    env = _environment(environment)
    version = clean_version(version)
    if type not in DeploymentType.values:
        raise InvalidDeployment("type", f"one of {', '.join(DeploymentType.values)}")
    steps = env.pipeline.steps if steps is None else steps
    try:
        validate_steps(steps)
    except InvalidStep as exc:
        raise InvalidDeployment(f"pipeline {env.pipeline.name}: {exc.field}", exc.message) from None
    try:
        # Durable: the environment's lock (a unique constraint) is caught as IntegrityError here, which
        # only the outermost transaction survives, and the run is sent after commit.
        with transaction.atomic(durable=True):
            deployment = Deployment.objects.create(
                environment=env,
                version=version,
                type=type,
                recovery_type=recovery_type,
                dry_run=dry_run,
                requested_by=actor.label[:150],
                requested_by_user=actor.user if actor.user is not None and actor.user.pk else None,
                steps=steps,
            )
            log(
                deployment,
                f"{'dry run of ' if dry_run else ''}{type} {version} to {env.name} requested by {actor.label}",
            )
            audit_record(
                actor=actor,
                action=f"deployment.{'dry_run' if dry_run else type}",
                obj=deployment,
                after=snapshot(deployment, fields=["environment", "version", "type", "recovery_type", "dry_run"]),
            )
            _queue_run(deployment)
    except IntegrityError:
        active = Deployment.objects.active().select_related("environment").filter(environment=env).first()
        if active is None:  # it finished in between: the caller may simply try again
            raise
        raise DeploymentLocked(active) from None
    return deployment


def _queue_run(deployment: Deployment) -> None:
    transaction.on_commit(lambda: dispatch(deployment))


def dispatch(deployment: Deployment) -> bool:
    """Send the run task of a committed, queued deployment; record on the row whether the broker took it.

    Called after commit (a request) or by the reaper, never inside a transaction that could still roll
    back. Never raises: the deployment is saved and holds its environment's lock, so a broker that
    does not answer is recorded (``dispatch_error``, a log line) for the caller to report, and the
    reaper sends it again. The worker claims it with a conditional update, so a second message for
    the same deployment does nothing.
    """
    from deployments.tasks import run_deployment

    earlier = deployment.dispatch_error
    try:
        run_deployment.delay(deployment.pk)
    except Exception as exc:  # noqa: BLE001 - whatever the broker client raises: recorded, sent again later
        error = f"could not reach the broker: {redact_text(str(exc))}"[:1000]
        logger.error("could not send deployment %s to the broker: %s", deployment.pk, exc)
        _record_dispatch(deployment, None, error, line=f"{error}; {pending_detail()}", level=LogLevel.ERROR)
        return False
    line = f"sent to the broker (the last try failed: {earlier})" if earlier else ""
    _record_dispatch(deployment, timezone.now(), "", line=line, level=LogLevel.INFO)
    return True


def pending_detail() -> str:
    """What happens to a deployment whose run task could not be sent (for the API, the command, the log)."""
    return (
        "the reaper sends it again when the broker answers; one that has not started "
        f"{settings.DEPLOY_QUEUE_TIMEOUT_SECONDS} s after it was requested is cancelled"
    )


def _record_dispatch(deployment: Deployment, dispatched_at: Any, error: str, *, line: str, level: str) -> None:
    deployment.dispatched_at, deployment.dispatch_error = dispatched_at, error
    try:
        with transaction.atomic():
            Deployment.objects.filter(pk=deployment.pk).update(dispatched_at=dispatched_at, dispatch_error=error)
            if line:
                log(deployment.pk, line, level=level)
    except Exception as exc:  # noqa: BLE001 - the database is gone too: the reaper finds the row unsent
        logger.error("could not record the dispatch of deployment %s: %s", deployment.pk, exc)


def rollback_to_previous(*, environment: Any, actor: Actor) -> Deployment:
    """A new deployment of the environment's last succeeded version (the release before the current one).

    "Previous release" is the last succeeded deploy whose version differs from the newest succeeded one.
    A deploy that failed and was rolled back never became a release (the environment still runs the
    one before it); a succeeded rollback is one, so a second rollback returns to what the first replaced.
    """
    env = _environment(environment)
    _current, previous = rollback_versions(env.name)
    return deployment_request(environment=env.name, version=previous, actor=actor, type=DeploymentType.ROLLBACK)


def rollback_versions(environment: Any) -> tuple[str, str]:
    """(current, previous): what a rollback of ``environment`` would replace and deploy. The page asks
    with these before it rolls back; raises InvalidDeployment when there is nothing to roll back to."""
    env = _environment(environment)
    succeeded = list(
        Deployment.objects.filter(environment=env, status=DeploymentStatus.SUCCEEDED, dry_run=False)
        .exclude(type=DeploymentType.RECOVERY)
        .order_by("-finished_at")
        .values_list("version", flat=True)[:50]
    )
    if not succeeded:
        raise InvalidDeployment("environment", f"{env.name} has no succeeded deployment to roll back to")
    current = succeeded[0]
    previous = next((v for v in succeeded if v != current), None)
    if previous is None:
        raise InvalidDeployment(
            "environment", f"{env.name} has only ever run {current}: no previous release{_why_not(env)}"
        )
    return current, previous


def _why_not(env: Environment) -> str:
    """A deploy that failed (and was rolled back) never became a release: an operator who just watched
    one fail expects to roll back from it, so the refusal says why that version does not count."""
    latest = (
        Deployment.objects.filter(environment=env, type=DeploymentType.DEPLOY, dry_run=False, status__in=FINISHED)
        .order_by("-created_at")
        .values_list("version", "status")
        .first()
    )
    if latest is None or latest[1] == DeploymentStatus.SUCCEEDED:
        return ""
    return f" ({latest[0]} ended {latest[1]}, so it never became a release)"


def audit_state(deployment: Deployment) -> dict[str, Any]:
    """What a run's audit events record: enough to say, on a chart, which release went where (and to
    leave a dry run off it: it changes nothing)."""
    return {
        "environment": deployment.environment.name,
        "version": deployment.version,
        "type": deployment.type,
        "recovery_type": deployment.recovery_type,
        "dry_run": deployment.dry_run,
        "status": deployment.status,
    }


def recovery_version(plan: RecoveryPlan) -> str:
    """The release a recovery keeps: the environment's last successful one (a dry run or an earlier
    recovery is none), else "current"."""
    last = (
        Deployment.objects.filter(environment=plan.environment, status=DeploymentStatus.SUCCEEDED, dry_run=False)
        .exclude(type=DeploymentType.RECOVERY)
        .order_by("-finished_at")
        .values_list("version", flat=True)
        .first()
    )
    return last or "current"


def recovery_run_for_alert(*, alert_id: int, rule_name: str, recovery_plan: str, recovery_auto: bool) -> None:
    """``alerting.signals.alert_fired``: a rule with ``auto`` runs its recovery plan, once per firing.

    The alert is claimed first (a conditional UPDATE in alerting), so the plan starts once however often
    this is told; what came of it (the deployment, or why none) is audited on the alert either way.
    """
    from alerting.services import alert_recovery_claim

    if not recovery_plan or not recovery_auto:
        return
    alert = alert_recovery_claim(alert_id=alert_id)
    if alert is None:  # resolved since, or its plan was started already
        return
    actor = Actor.system(f"alert rule {rule_name}")
    outcome: dict[str, Any] = {"plan": recovery_plan}
    try:
        deployment = recovery_run(failure_type=recovery_plan, actor=actor)
    except ControlPlaneError as exc:  # the plan is gone or cannot run, or the environment is busy
        outcome["error"] = exc.message
        logger.warning("alert %s: recovery plan %s not started: %s", alert_id, recovery_plan, outcome["error"])
    else:
        outcome["deployment"] = deployment.pk
    audit_record(actor=actor, action="alert.recovery_run", obj=alert, after=outcome)


def recovery_run(*, failure_type: str, actor: Actor, dry_run: bool = False) -> Deployment:
    """Run the recovery plan for ``failure_type`` like a deployment (under the environment's lock)."""
    plan = RecoveryPlan.objects.select_related("environment").filter(failure_type=failure_type).first()
    if plan is None:
        known = ", ".join(RecoveryPlan.objects.values_list("failure_type", flat=True)) or "none"
        raise NoRecoveryPlan("type", f"no recovery plan for {failure_type!r} (plans: {known})")
    try:
        validate_steps(plan.steps)
    except InvalidStep as exc:  # the plan's steps are wrong, not the environment's pipeline
        raise InvalidDeployment(f"recovery plan {plan.failure_type}: {exc.field}", exc.message) from None
    return deployment_request(
        environment=plan.environment.name,
        version=recovery_version(plan),
        actor=actor,
        type=DeploymentType.RECOVERY,
        steps=plan.steps,
        recovery_type=plan.failure_type,
        dry_run=dry_run,
    )


def deployment_cancel(*, deployment: Deployment, actor: Actor) -> Deployment:
    """Cancel: a queued one ends at once; a running one has its step killed, then rolls back."""
    with transaction.atomic(durable=True):
        deployment = Deployment.objects.select_for_update().get(pk=deployment.pk)
        if deployment.status == DeploymentStatus.QUEUED:
            deployment.status = DeploymentStatus.CANCELLED
            deployment.finished_at = timezone.now()
            deployment.error = f"cancelled by {actor.label} before it started"
            deployment.save(update_fields=["status", "finished_at", "error"])
        elif deployment.status == DeploymentStatus.RUNNING:
            deployment.cancel_requested = True
            deployment.save(update_fields=["cancel_requested"])
        else:
            raise NotCancellable(f"deployment #{deployment.pk} is {deployment.status}: only queued or running ones")
        log(deployment, f"cancel requested by {actor.label}", level=LogLevel.WARNING)
        audit_record(actor=actor, action="deployment.cancel", obj=deployment, after={"status": deployment.status})
    if deployment.status == DeploymentStatus.CANCELLED:
        notify_soon(deployment)
    return deployment


# --- Faults --------------------------------------------------------------------------------------


def reap(*, now: Any = None) -> dict[str, list[int]]:
    """Finish what a lost worker left: stale running deployments roll back in a new task; queued ones
    nobody picked up are cancelled; a rollback whose worker was lost is continued."""
    from deployments.tasks import continue_rollback

    now = now or timezone.now()
    stale = now - timedelta(seconds=settings.DEPLOY_HEARTBEAT_TIMEOUT_SECONDS)
    summary: dict[str, list[int]] = {"rolled_back": [], "cancelled": [], "continued": []}
    for deployment in Deployment.objects.filter(
        status__in=[DeploymentStatus.RUNNING, DeploymentStatus.ROLLING_BACK], heartbeat_at__lt=stale
    ):
        with transaction.atomic():
            claim = _new_claim()
            claimed = Deployment.objects.filter(
                pk=deployment.pk, status=deployment.status, heartbeat_at=deployment.heartbeat_at
            ).update(status=DeploymentStatus.ROLLING_BACK, claim=claim, heartbeat_at=now, worker="")
            if not claimed:
                continue  # its worker came back, or another reaper got it
            lost = StepRun.objects.filter(deployment=deployment, status=StepStatus.RUNNING)
            names = list(lost.values_list("name", flat=True))
            _kill_orphans(deployment, lost)
            lost.update(status=StepStatus.FAILED, finished_at=now, error="worker lost")
            if deployment.status == DeploymentStatus.RUNNING:
                Deployment.objects.filter(pk=deployment.pk).update(
                    error=f"worker lost during {', '.join(names) or 'a step'}"
                )
            log(
                deployment,
                f"worker {deployment.worker or '?'} lost (no heartbeat since {deployment.heartbeat_at:%H:%M:%S}); "
                f"{'rolling back' if deployment.status == DeploymentStatus.RUNNING else 'continuing the rollback'}",
                level=LogLevel.ERROR,
            )
            audit_record(
                actor=Actor.system("deployment reaper"),
                action="deployment.reaped",
                obj=deployment,
                after=audit_state(deployment),
            )
            transaction.on_commit(functools.partial(continue_rollback.delay, deployment.pk, claim))
        key = "rolled_back" if deployment.status == DeploymentStatus.RUNNING else "continued"
        summary[key].append(deployment.pk)
    never_started = now - timedelta(seconds=settings.DEPLOY_QUEUE_TIMEOUT_SECONDS)
    for deployment in Deployment.objects.filter(status=DeploymentStatus.QUEUED, created_at__lt=never_started):
        why = "no worker picked it up in time"
        if deployment.dispatched_at is None:
            why = "the broker could not be reached in time"
        with transaction.atomic():
            if not Deployment.objects.filter(pk=deployment.pk, status=DeploymentStatus.QUEUED).update(
                status=DeploymentStatus.CANCELLED, finished_at=now, error=why
            ):
                continue
            log(deployment, f"{why}: cancelled", level=LogLevel.ERROR)
            audit_record(actor=Actor.system("deployment reaper"), action="deployment.cancel", obj=deployment)
            notify_soon(deployment)  # as an operator's cancel does: nobody may be watching the page
        summary["cancelled"].append(deployment.pk)
    summary["resent"] = _send_again(now)
    return summary


def _send_again(now: Any) -> list[int]:
    """Send the run task again of queued deployments the broker never took (it was down when they were
    requested, or the request's process died between commit and send) and of those no worker took
    within DEPLOY_DISPATCH_RETRY_SECONDS (a message lost by the broker). A duplicate is harmless: only
    one worker's claim from ``queued`` succeeds."""
    retry_before = now - timedelta(seconds=settings.DEPLOY_DISPATCH_RETRY_SECONDS)
    unsent = Q(dispatched_at=None) & (~Q(dispatch_error="") | Q(created_at__lt=retry_before))
    resent = []
    lost = Q(dispatched_at__lt=retry_before)
    for deployment in Deployment.objects.filter(unsent | lost, status=DeploymentStatus.QUEUED).order_by("pk"):
        if deployment.dispatched_at is not None:
            log(deployment, f"no worker took it within {settings.DEPLOY_DISPATCH_RETRY_SECONDS} s: sending it again")
        if dispatch(deployment):
            resent.append(deployment.pk)
    return resent


def _kill_orphans(deployment: Deployment, runs: Any) -> None:
    """A lost worker's command may still run: kill its process group if it ran on this host."""
    import os
    import signal
    import socket

    if deployment.worker.rsplit(":", 1)[0] != socket.gethostname():
        return
    for pid in runs.exclude(pid=None).values_list("pid", flat=True):
        try:
            os.killpg(pid, signal.SIGKILL)
            log(deployment, f"killed the lost step's process group {pid}", level=LogLevel.WARNING)
        except (ProcessLookupError, PermissionError):
            pass


def _new_claim() -> str:
    import secrets

    return secrets.token_hex(8)


# --- Notifications -------------------------------------------------------------------------------


def notify_soon(deployment: Deployment) -> None:
    """Tell the alert channels (after commit) that a deployment started or ended."""

    def send() -> None:
        from alerting.services import event_notify

        fresh = Deployment.objects.select_related("environment").get(pk=deployment.pk)
        try:
            event_notify(
                kind="deployment",
                title=f"deployment #{fresh.pk} {fresh.environment.name} {fresh.version}: {fresh.get_status_display()}",
                severity="critical" if fresh.status in ("failed", "rollback_failed") else "info",
                details={
                    "deployment": fresh.pk,
                    "environment": fresh.environment.name,
                    "version": fresh.version,
                    "type": fresh.type,
                    "status": fresh.status,
                    "requested_by": fresh.requested_by,
                    "error": fresh.error,
                },
            )
        except Exception as exc:  # noqa: BLE001 - a notification never breaks a deployment
            logger.error("could not notify about deployment %s: %s", deployment.pk, exc)

    transaction.on_commit(send)


def phase_runs(deployment: Deployment, phase: str) -> dict[int, StepRun]:
    return {run.index: run for run in deployment.step_runs.filter(phase=phase)}


__all__ = [
    "DeploymentLocked",
    "InvalidDeployment",
    "NoRecoveryPlan",
    "NotCancellable",
    "Phase",
    "deployment_cancel",
    "deployment_request",
    "recovery_run",
    "reap",
    "rollback_to_previous",
    "rollback_versions",
]
