"""The backup gate: a migration (or any step marked ``requires_verified_backup``) starts only when its
database has a restorable backup, i.e. a verified one younger than the target's RPO.

A gated step may name its ``backup_target`` (default: ``default``, as the backup step) and ask for
``take_backup: true``: it then takes a backup and verifies it before deciding. The runner asks the gate
before a forward step runs (a rollback action is never gated: refusing to undo would leave a half-done
deploy). A refusal fails the step before anything of it ran, saying which backup is missing or too old
and how to get one. The decision itself is a few indexed queries (``bench/backup_gate.py`` times it).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from django.utils import timezone

from deployments.steps import STEP_NAME_PATTERN, Context, InvalidStep, StepFailed

if TYPE_CHECKING:
    from backups.models import Backup, Verification

FIELDS = frozenset({"requires_verified_backup", "backup_target", "take_backup"})
DEFAULT_TARGET = "default"


def is_gated(step: dict[str, Any]) -> bool:
    """Whether ``step`` (a forward step) waits for a restorable backup: every migrate step unless it says
    ``requires_verified_backup: false``, and any step that says ``true``."""
    return bool(step.get("requires_verified_backup", step.get("kind") == "migrate"))


def check_fields(step: dict[str, Any], where: str, *, nested: bool) -> None:
    """The schema of the gate's fields; raises InvalidStep naming the field."""
    for name in ("requires_verified_backup", "take_backup"):
        if name in step and not isinstance(step[name], bool):
            raise InvalidStep(f"{where}.{name}", "true or false")
    if "backup_target" in step:
        target = step["backup_target"]
        if not isinstance(target, str) or not STEP_NAME_PATTERN.fullmatch(target) or " " in target:
            raise InvalidStep(f"{where}.backup_target", "the name of a backup target")
    if nested and step.get("requires_verified_backup"):
        raise InvalidStep(
            f"{where}.requires_verified_backup", "a rollback action is never gated: it must be able to undo"
        )
    if not is_gated(step) or nested:
        for name in ("backup_target", "take_backup"):
            if name in step:
                why = "a rollback action is never gated" if nested else "the step is not gated"
                raise InvalidStep(
                    f"{where}.{name}", f"{why}: only with requires_verified_backup (on by default for migrate)"
                )


@dataclass(frozen=True)
class Decision:
    """What the gate found for one target: a pass with the backup that makes it, or why not and what to do."""

    target: str
    passed: bool
    reason: str = ""  # on a refusal: which backup is missing or too old, and how to fix it
    backup: Backup | None = None
    verification: Verification | None = None
    age_hours: float | None = None
    rpo_hours: int | None = None

    def describe(self) -> str:
        """The backup and its verification, for the step's log."""
        backup, verification = self.backup, self.verification
        if backup is None:
            return self.reason
        text = (
            f"backup #{backup.pk} of {self.target}, taken {backup.started_at:%Y-%m-%d %H:%M:%S} UTC "
            f"({self.age_hours:.2f} h old, RPO {self.rpo_hours} h), {backup.size_bytes} bytes, "
            f"sha256 {backup.sha256[:16]}"
        )
        if verification is not None:
            restored = f", restored in {verification.restore_ms} ms" if verification.restore_ms is not None else ""
            finished = verification.finished_at or backup.verified_at
            text += f"; verification #{verification.pk} passed"
            text += f" at {finished:%Y-%m-%d %H:%M:%S} UTC" if finished else ""
            text += f"{restored}, checks {', '.join(c['name'] for c in verification.checks)}"
        return text


def _fix(target: str) -> str:
    return (
        f'run "python manage.py backup {target}" then "python manage.py verify_backup --latest {target}", '
        "or set take_backup: true on the step"
    )


def decide(target_name: str, *, now: datetime | None = None) -> Decision:
    """Whether ``target_name``'s latest verified backup is younger than its RPO (three indexed queries)."""
    from backups.models import Backup, BackupTarget, Verification, VerificationResult

    now = now or timezone.now()
    target = BackupTarget.objects.filter(name=target_name).first()
    if target is None:
        known = ", ".join(BackupTarget.objects.values_list("name", flat=True)) or "none"
        return Decision(
            target_name, False, f"no backup target named {target_name!r} (targets: {known}): set backup_target"
        )
    latest = Backup.objects.verified().filter(target=target).order_by("-started_at", "-id").first()
    if latest is None:
        return Decision(
            target.name,
            False,
            f"target {target.name} has no verified backup{_newer_unverified(target, None)}: {_fix(target.name)}",
            rpo_hours=target.rpo_hours,
        )
    verification = (
        Verification.objects.filter(backup=latest, status=VerificationResult.PASSED).order_by("-finished_at").first()
    )
    age = (now - latest.started_at).total_seconds() / 3600
    if age > target.rpo_hours:
        return Decision(
            target.name,
            False,
            f"the latest verified backup of {target.name}, #{latest.pk} taken {latest.started_at:%Y-%m-%d %H:%M} UTC, "
            f"is {age:.1f} h old, older than the target's RPO of {target.rpo_hours} h"
            f"{_newer_unverified(target, latest)}: {_fix(target.name)}",
            latest,
            verification,
            age,
            target.rpo_hours,
        )
    return Decision(target.name, True, "", latest, verification, age, target.rpo_hours)


def _newer_unverified(target: Any, latest: Backup | None) -> str:
    """A refusal's hint: a newer backup that succeeded but is not verified (only verifying it is left)."""
    from backups.models import VerificationResult

    newer = target.backups.succeeded().exclude(verification=VerificationResult.PASSED)
    if latest is not None:
        newer = newer.filter(started_at__gt=latest.started_at)
    backup = newer.order_by("-started_at", "-id").first()
    if backup is None:
        return ""
    state = backup.get_verification_display()
    return f" (backup #{backup.pk} of {backup.started_at:%Y-%m-%d %H:%M} UTC is {state})"


def take_verified_backup(target_name: str, ctx: Context) -> None:
    """Back up ``target_name`` and verify the backup, logging both; raises StepFailed when either fails."""
    from backups.models import BackupStatus, BackupTarget
    from backups.services import AlreadyRunning, backup_create
    from controlplane.audit import Actor

    target = BackupTarget.objects.filter(name=target_name).first()
    if target is None:
        known = ", ".join(BackupTarget.objects.values_list("name", flat=True)) or "none"
        raise StepFailed(f"no backup target named {target_name!r} (targets: {known}): set backup_target")
    actor = Actor.system(ctx.actor_label)
    ctx.output(f"taking a backup of {target.name}\n")
    try:
        backup = backup_create(target=target, actor=actor)
    except AlreadyRunning as exc:
        raise StepFailed(f"cannot take a backup of {target.name}: {exc}") from None
    if backup.status != BackupStatus.SUCCEEDED:
        raise StepFailed(f"backup #{backup.pk} of {target.name} failed: {backup.error}")
    ctx.output(f"backup #{backup.pk} of {target.name}: {backup.size_bytes} bytes, sha256 {backup.sha256}\n")
    verify_backup(backup, ctx)


def verify_backup(backup: Backup, ctx: Context) -> None:
    """Verify ``backup`` (restore it into a scratch database), logging the outcome; StepFailed unless it passed."""
    from backups import engines
    from backups.models import VerificationResult
    from backups.services import AlreadyRunning, backup_verify
    from controlplane.audit import Actor

    target = backup.target.name
    try:
        verification = backup_verify(backup=backup, actor=Actor.system(ctx.actor_label))
    except (AlreadyRunning, engines.BackupError) as exc:
        raise StepFailed(f"cannot verify backup #{backup.pk} of {target}: {exc}") from None
    if verification.status != VerificationResult.PASSED:
        raise StepFailed(
            f"verification #{verification.pk} of backup #{backup.pk} failed at {verification.failed_check}: "
            f"{verification.error}"
        )
    ctx.output(
        f"verification #{verification.pk} of backup #{backup.pk} passed "
        f"({', '.join(c['name'] for c in verification.checks)}; restore {verification.restore_ms} ms)\n"
    )


def enforce(step: dict[str, Any], ctx: Context) -> None:
    """Before a forward step runs: nothing for an ungated step; else pass (logging the backup) or raise
    StepFailed with the refusal. With ``take_backup`` a new verified backup is taken first."""
    if not is_gated(step):
        return
    target = step.get("backup_target", DEFAULT_TARGET)
    if step.get("take_backup"):
        take_verified_backup(target, ctx)
    decision = decide(target)
    if not decision.passed:
        raise StepFailed(f"backup gate: {decision.reason}")
    ctx.output(f"backup gate passed: {decision.describe()}\n")


def describe(step: dict[str, Any]) -> str:
    """What a dry run says of the gate (and whether it would pass now), or "" for an ungated step."""
    if not is_gated(step):
        return ""
    target = step.get("backup_target", DEFAULT_TARGET)
    if step.get("take_backup"):
        return f"take and verify a backup of {target}, then"
    decision = decide(target)
    now = f"now: passes with backup #{decision.backup.pk}" if decision.passed and decision.backup else "now: refused"
    return f"check that {target} has a verified backup younger than its RPO ({now}), then"
