"""Restore drills: a recovery plan rehearsed on scratch databases only, on its schedule.

A drill restores the latest verified backup of the plan's target into a scratch database (the
verification's machinery, ``engines.Verifier``, with its guards: never the source, never the control
plane's database), runs the plan's smoke queries there read-only (each must return a row), measures the
time to that working database (the RTO achieved) and drops the scratch. The plan's environment, steps and
databases are never touched.

A pgBackRest target's drill (``pitr.drill``) restores its newest set, with all the WAL archived after it
(the latest recoverable point), into a scratch data directory served on a free port (the point-in-time
verification's ``engines.PitrVerifier``), runs the smoke queries there and removes the directory. Its
backup is the target's latest succeeded one, verified or not: a set's point-in-time verifications prove
restores to earlier times, and the drill restoring it is itself the proof that it restores.

The plans are deployments', which backups may not import: they are read through ``controlplane.drills``
(deployments registers them), and a drill names its plan by failure type. Every write here is audited; a
failed drill is recorded, then ``backups.signals.backup_failed`` is sent after commit (sender: ``Drill``),
which alerting connects, as for a failed backup; its "restore drill failed" rule reads the drill's failure
(``backups.selectors.drill_failures``, ``drill_failure``).
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from backups import engines
from backups.models import Drill, DrillStatus
from backups.progress import Progress
from backups.services import (
    AlreadyRunning,
    _dump_verifier,
    _dump_verifier_run,
    _heartbeat,
    _on_live_connection,
    decryption_identities,
    drop_dump_scratch,
)
from controlplane.audit import Actor, audit_record, snapshot
from controlplane.drills import DrillPlan, drill_plan
from controlplane.errors import InvalidInput, NotFound
from controlplane.redaction import redact_text

logger = logging.getLogger(__name__)
RETRY_AFTER_FAILURE = timedelta(hours=1)


class NoSuchPlan(NotFound):
    """No recovery plan by that failure type (404)."""


class NotDrillable(InvalidInput):
    """The plan names no backup target to restore, or its target is gone (422)."""


# --- The schedule --------------------------------------------------------------------------------


def next_drill_due(plan: DrillPlan, latest: Drill | None, *, now: datetime | None = None) -> datetime | None:
    """When ``plan`` is next drilled: its schedule after the latest drill, an hour after a failed one; at
    once when never drilled. None when it is not drilled on a schedule or a drill is running."""
    if not plan.drilled:
        return None
    if latest is None:
        return now or timezone.now()
    if latest.status == DrillStatus.RUNNING:
        return None
    interval = timedelta(hours=plan.interval_hours)
    if latest.status == DrillStatus.FAILED:
        interval = min(interval, RETRY_AFTER_FAILURE)
    return latest.started_at + interval


def drill_due(plan: DrillPlan, latest: Drill | None, *, now: datetime) -> bool:
    due = next_drill_due(plan, latest, now=now)
    return due is not None and due <= now


# --- Running one ---------------------------------------------------------------------------------


def _plan(name: str) -> DrillPlan:
    plan = drill_plan(name)
    if plan is None:
        raise NoSuchPlan(f"no recovery plan {name!r}")
    if not plan.target:
        raise NotDrillable("plan", f"recovery plan {name!r} names no backup target to drill (set its drill target)")
    return plan


def drill_start(*, plan: DrillPlan, actor: Actor) -> Drill:
    """Claim ``plan``: a running drill row, unique per plan (a database constraint says so). A running one
    whose worker is gone is failed first, as ``backup_start`` does."""
    from backups.models import BackupTarget

    target = BackupTarget.objects.filter(name=plan.target).first()
    if target is None:
        raise NotDrillable("plan", f"recovery plan {plan.name!r}: no backup target {plan.target!r}")
    for _ in range(2):
        try:
            with transaction.atomic(durable=True):
                now = timezone.now()
                drill = Drill.objects.create(
                    plan=plan.name,
                    target=target,
                    interval_hours=plan.interval_hours,
                    smoke_queries=list(plan.smoke_queries),
                    requested_by=actor.label[:150],
                    started_at=now,
                    heartbeat_at=now,
                )
                audit_record(actor=actor, action="backup.drill_started", obj=drill, after=_state(drill))
                return drill
        except IntegrityError:
            running = Drill.objects.filter(plan=plan.name, status=DrillStatus.RUNNING).first()
            if running is not None and not _reap(running, now=timezone.now()):
                break
    raise AlreadyRunning(f"recovery plan {plan.name} is already being drilled")


def drill_create(*, plan_name: str, actor: Actor) -> Drill:
    """Drill the recovery plan ``plan_name`` now, in this process."""
    drill = drill_start(plan=_plan(plan_name), actor=actor)
    return drill_run(drill=drill, actor=actor)


def drill_run(*, drill: Drill, actor: Actor) -> Drill:
    """Run the claimed ``drill`` and record its outcome (on a new connection if the held one died)."""
    previous = (
        Drill.objects.filter(plan=drill.plan, status=DrillStatus.PASSED)
        .exclude(pk=drill.pk)
        .order_by("-started_at")
        .only("started_at", "finished_at")
        .first()
    )
    expected = (
        int((previous.finished_at - previous.started_at).total_seconds() * 1000)
        if previous is not None and previous.finished_at
        else None
    )
    progress = Progress(f"drill #{drill.pk} of {drill.plan}", expected_ms=expected)
    with _heartbeat(Drill, drill.pk, DrillStatus.RUNNING, progress):
        outcome, backup_id, rto_ms = _rehearse(drill, progress)
    return _finished(drill, outcome, actor, backup_id=backup_id, rto_ms=rto_ms)


def _rehearse(drill: Drill, progress: Progress) -> tuple[engines.VerifyOutcome, int | None, int | None]:
    """The outcome, the backup restored and the RTO achieved (ms, when the scratch answered every query)."""
    target = drill.target
    if target.is_pitr:
        return _rehearse_pitr(drill, progress)
    backup = target.backups.verified().order_by("-started_at", "-id").first()
    if backup is None:
        fail = engines.CheckResult("setup", "fail", f"target {target.name} has no verified backup to restore", 0)
        return engines.VerifyOutcome(checks=[fail], scratch_dropped=True), None, None
    Drill.objects.filter(pk=drill.pk).update(backup=backup)
    start = time.perf_counter()
    try:
        verifier = _dump_verifier(
            backup,
            label=f"drill_{drill.plan}",
            record_scratch=lambda name: Drill.objects.filter(pk=drill.pk).update(scratch=name),
            progress=progress,
            smoke_queries=[str(query) for query in drill.smoke_queries],
        )
        identities = decryption_identities(backup)  # an encrypted backup: a missing key fails before the fetch
        # The clock runs from here: fetching the backup is part of a real recovery too.
        start = time.perf_counter()
        outcome = _dump_verifier_run(verifier, backup, identities=identities)
    except Exception as exc:  # never leave a drill running
        outcome = _setup_failed(drill, exc)
    return outcome, backup.pk, _rto_ms(outcome, start)


def _rehearse_pitr(drill: Drill, progress: Progress) -> tuple[engines.VerifyOutcome, int | None, int | None]:
    """As ``_rehearse``, for a pgBackRest target: its latest succeeded set (see the module's docstring)
    restored to the end of the archived WAL. The clock runs from the start of the restore."""
    from backups import pitr

    target = drill.target
    backup = target.backups.succeeded().order_by("-started_at", "-id").first()
    if backup is None:
        fail = engines.CheckResult("setup", "fail", f"target {target.name} has no pgBackRest backup to restore", 0)
        return engines.VerifyOutcome(checks=[fail], scratch_dropped=True), None, None
    Drill.objects.filter(pk=drill.pk).update(backup=backup)

    def record_scratch(path: str) -> None:
        _on_live_connection(
            lambda: Drill.objects.filter(pk=drill.pk).update(scratch=path), what=f"the scratch of drill {drill.pk}"
        )

    start = time.perf_counter()
    try:
        outcome = pitr.drill(
            backup,
            smoke_queries=[str(query) for query in drill.smoke_queries],
            record_scratch=record_scratch,
            progress=progress,
        )
    except Exception as exc:  # never leave a drill running
        outcome = _setup_failed(drill, exc)
    return outcome, backup.pk, _rto_ms(outcome, start)


def _setup_failed(drill: Drill, exc: Exception) -> engines.VerifyOutcome:
    """A drill that could not run: its setup check fails with the error (an unexpected one logged)."""
    if isinstance(exc, engines.BackupError):
        detail = str(exc)
    else:
        logger.exception("drill %s failed unexpectedly", drill.pk)
        detail = f"unexpected error: {type(exc).__name__}: {exc}"
    return engines.VerifyOutcome(checks=[engines.CheckResult("setup", "fail", detail, 0)])


def _rto_ms(outcome: engines.VerifyOutcome, start: float) -> int | None:
    """The RTO achieved: from ``start`` to the last smoke query answered; None unless the drill passed."""
    if outcome.failed is None and outcome.ready_at is not None:
        return int((outcome.ready_at - start) * 1000)
    return None


def _state(drill: Drill) -> dict[str, Any]:
    return snapshot(drill, fields=["plan", "target", "backup", "status", "rto_ms", "error", "scratch_dropped"])


def _finished(
    drill: Drill, outcome: engines.VerifyOutcome, actor: Actor, *, backup_id: int | None, rto_ms: int | None
) -> Drill:
    failed = outcome.failed
    checks = [{**check.as_dict(), "detail": redact_text(check.detail)} for check in outcome.checks]
    error = f"{failed.name}: {redact_text(failed.detail)}"[:5000] if failed else ""
    if failed:
        logger.error("drill %s of %s failed at %s", drill.pk, drill.plan, error)

    def finished() -> Drill:
        now = timezone.now()
        with transaction.atomic():
            drill.refresh_from_db(fields=["scratch"])
            drill.status = DrillStatus.FAILED if failed else DrillStatus.PASSED
            drill.finished_at = now
            drill.backup_id = backup_id
            drill.rto_ms = rto_ms
            drill.checks = checks
            drill.error = error
            drill.scratch_dropped = outcome.scratch_dropped or not drill.scratch
            drill.progress = {}
            drill.save()
            action = "backup.drill_failed" if failed else "backup.drill"
            audit_record(actor=actor, action=action, obj=drill, after=_state(drill))
            if failed:
                _alert_soon()
        return drill

    return _on_live_connection(finished, what=f"the outcome of drill {drill.pk}")


def _alert_soon() -> None:
    """As a failed backup: ``backup_failed`` once the failure commits (alerting listens; robust)."""
    from backups.signals import backup_failed

    transaction.on_commit(lambda: backup_failed.send(sender=Drill), robust=True)


# --- Faults --------------------------------------------------------------------------------------


def reap_stale_drills(*, now: datetime | None = None) -> int:
    """Fail the drills whose worker is gone, dropping their scratch; drop scratch a finished one left."""
    now = now or timezone.now()
    reaped = sum(_reap(drill, now=now) for drill in Drill.objects.filter(status=DrillStatus.RUNNING))
    left = Drill.objects.exclude(status=DrillStatus.RUNNING).exclude(scratch="").filter(scratch_dropped=False)
    for drill in left.select_related("backup", "target"):
        if _drop_scratch(drill):
            Drill.objects.filter(pk=drill.pk).update(scratch_dropped=True)
    return reaped


def _reap(drill: Drill, *, now: datetime) -> bool:
    reason = drill.lost_worker(now=now)
    if not reason:
        return False
    dropped = _drop_scratch(drill)
    outcome = engines.VerifyOutcome(checks=[engines.CheckResult("setup", "fail", reason, 0)], scratch_dropped=dropped)
    with transaction.atomic():
        current = Drill.objects.select_for_update().filter(pk=drill.pk).first()
        if current is None or not current.lost_worker(now=now):
            return False  # its worker beat or finished meanwhile
        _finished(current, outcome, Actor.system("backups"), backup_id=current.backup_id, rto_ms=None)
    return True


def _drop_scratch(drill: Drill) -> bool:
    drill.refresh_from_db(fields=["scratch", "backup"])
    if not drill.scratch:
        return True
    if drill.target.is_pitr:  # a data directory (its server stopped first); a target keeps its kind once backed up
        try:
            return engines.remove_scratch(drill.scratch)
        except engines.BackupError as exc:
            logger.error("could not remove the scratch directory %s of drill %s: %s", drill.scratch, drill.pk, exc)
            return False
    # A SQLite scratch is a file in the partial folder, named so.
    sqlite = drill.scratch.endswith(".sqlite3")
    return drop_dump_scratch(drill.target, drill.scratch, sqlite=sqlite, what=f"of drill {drill.pk}")


# --- Requests from operators ---------------------------------------------------------------------


def drill_request(*, plan_name: str, actor: Actor) -> bool:
    """Queue a drill of ``plan_name`` for the worker (the Backups page's button). False when the broker did
    not take it (nothing is recorded then: the schedule drills the plan in its time)."""
    from backups.tasks import send_drill

    plan = _plan(plan_name)
    sent: list[bool] = []
    with transaction.atomic(durable=True):
        audit_record(
            actor=actor,
            action="backup.drill_requested",
            object_type="deployments.recoveryplan",
            object_id=plan.name,
            object_label=plan.name,
            after={"plan": plan.name, "target": plan.target},
        )
        transaction.on_commit(lambda: sent.append(send_drill(plan.name, requested_by=actor.label)))
    return all(sent)
