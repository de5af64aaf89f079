"""Reads about backups for pages, the API and monitoring: status and recovery readiness per target."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from django.utils import timezone

from backups.models import (
    LOCAL_STORAGE,
    Backup,
    BackupCopy,
    BackupStatus,
    BackupTarget,
    CopyStatus,
    Drill,
    DrillStatus,
    Verification,
    VerificationResult,
)
from controlplane.drills import DrillPlan, drill_plans


@dataclass
class Readiness:
    """Can ``target`` be recovered, and how well: the figures an operator reads before they need it."""

    target: BackupTarget
    latest_verified: Backup | None
    age_hours: float | None  # of the latest verified backup (its recovery point)
    rpo_met: bool
    restore_ms: int | None  # the last measured restore (the RTO estimate)
    window_days: int
    missing_days: list[date] = field(default_factory=list)
    last_failure: str = ""
    # pgBackRest targets: the recoverable window as pgbackrest info last read it, and the real RPO
    # (the age of the newest archived WAL); ``age_hours`` is that age for them.
    pitr: bool = False
    window_start: datetime | None = None
    window_end: datetime | None = None
    rpo_seconds: float | None = None
    pitr_error: str = ""

    @property
    def window_complete(self) -> bool:
        return not self.missing_days

    @property
    def first_pending(self) -> bool:
        """No verified backup yet, but the target is younger than its RPO: not late yet."""
        return self.latest_verified is None and self.target.created_at > timezone.now() - timedelta(
            hours=self.target.rpo_hours
        )

    @property
    def ready(self) -> bool:
        return self.rpo_met and self.window_complete

    @property
    def state(self) -> str:
        """``ready``, ``at_risk``, or ``no_backup_yet``: a new target whose first verified backup is not
        late yet and nothing failed. Pages say this one word, as the backups check does (it passes then)."""
        if self.ready:
            return "ready"
        if self.first_pending and not self.last_failure:
            return "no_backup_yet"
        return "at_risk"

    @property
    def state_words(self) -> str:
        return {"ready": "ready", "at_risk": "at risk", "no_backup_yet": "no verified backup yet"}[self.state]

    @property
    def problems(self) -> list[str]:
        problems = []
        if self.pitr and self.pitr_error:
            problems.append(f"pgBackRest {self.pitr_error.splitlines()[0]}")
        wal_late = self.rpo_seconds is None or self.rpo_seconds > self.target.rpo_hours * 3600
        if self.pitr and wal_late:
            age = (
                "no archived WAL"
                if self.rpo_seconds is None
                else f"newest archived WAL is {self.rpo_seconds:.0f} s old"
            )
            problems.append(f"{age} (RPO {self.target.rpo_hours} h)")
        if self.latest_verified is None:
            problems.append("no verified backup" if not self.pitr else "no verified point-in-time restore")
        elif not self.rpo_met and not self.pitr:
            problems.append(f"latest verified backup is {self.age_hours:.1f} h old (RPO {self.target.rpo_hours} h)")
        if self.missing_days:
            days = ", ".join(day.isoformat() for day in self.missing_days[:7])
            problems.append(f"{len(self.missing_days)} day(s) of the {self.window_days}-day window unverified: {days}")
        if self.last_failure:
            problems.append(self.last_failure)
        return problems

    def as_dict(self) -> dict[str, Any]:
        latest = self.latest_verified
        return {
            "target": self.target.name,
            "ready": self.ready,
            "rpoTargetHours": self.target.rpo_hours,
            "rpoMet": self.rpo_met,
            "latestVerifiedBackup": (
                {
                    "id": latest.pk,
                    "startedAt": latest.started_at.isoformat(),
                    "verifiedAt": latest.verified_at.isoformat() if latest.verified_at else None,
                    "sizeBytes": latest.size_bytes,
                    "sha256": latest.sha256,
                }
                if latest
                else None
            ),
            "latestVerifiedAgeHours": None if self.age_hours is None else round(self.age_hours, 2),
            "rtoEstimateSeconds": None if self.restore_ms is None else round(self.restore_ms / 1000, 3),
            "recoveryWindowDays": self.window_days,
            "windowComplete": self.window_complete,
            "missingDays": [day.isoformat() for day in self.missing_days],
            "problems": self.problems,
            **({"pointInTime": self.point_in_time()} if self.pitr else {}),
        }

    def point_in_time(self) -> dict[str, Any]:
        return {
            "windowStart": self.window_start.isoformat() if self.window_start else None,
            "windowEnd": self.window_end.isoformat() if self.window_end else None,
            "rpoSeconds": None if self.rpo_seconds is None else round(self.rpo_seconds, 1),
            "checkedAt": self.target.pitr_checked_at.isoformat() if self.target.pitr_checked_at else None,
            "error": self.pitr_error or None,
        }


def readiness(target: BackupTarget, *, now: datetime | None = None) -> Readiness:
    now = now or timezone.now()
    if target.is_pitr:
        return pitr_readiness(target, now=now)
    window_start = (now - timedelta(days=target.recovery_window_days - 1)).date()
    verified = list(
        target.backups.verified()
        .filter(started_at__date__gte=window_start - timedelta(days=1))
        .order_by("-started_at")
        .values_list("pk", "started_at")
    )
    latest = target.backups.verified().order_by("-started_at", "-id").first()
    age = (now - latest.started_at).total_seconds() / 3600 if latest else None
    rpo_met = age is not None and age <= target.rpo_hours
    days_covered = {started.date() for _, started in verified}
    first_pending = latest is None and target.created_at > now - timedelta(hours=target.rpo_hours)
    missing = []
    for offset in range(target.recovery_window_days):
        day = window_start + timedelta(days=offset)
        if day in days_covered or day < target.created_at.date():
            continue  # a day before the target existed cannot have been backed up
        if day == now.date() and (rpo_met or first_pending):
            continue  # today's backup may not be due yet; the RPO says whether that is fine
        missing.append(day)
    restore_ms = (
        Verification.objects.filter(backup__target=target, status=VerificationResult.PASSED)
        .order_by("-finished_at")
        .values_list("restore_ms", flat=True)
        .first()
    )
    return Readiness(
        target, latest, age, rpo_met, restore_ms, target.recovery_window_days, missing, last_failure(target)
    )


def pitr_readiness(target: BackupTarget, *, now: datetime) -> Readiness:
    """A pgBackRest target: its recovery point is the newest archived WAL, and a day of the window counts
    as verified when a point-in-time restore to a time on that day passed."""
    window_start = (now - timedelta(days=target.recovery_window_days - 1)).date()
    passed = Verification.objects.filter(
        backup__target=target, status=VerificationResult.PASSED, target_time__isnull=False
    )
    days_covered = {
        when.date()
        for when in passed.filter(target_time__date__gte=window_start).values_list("target_time", flat=True)
        if when is not None
    }
    latest = target.backups.verified().order_by("-started_at", "-id").first()
    rpo_seconds = target.rpo_seconds(now=now)
    # Met when the archive is recent enough and a point-in-time restore has been proven at all.
    rpo_met = rpo_seconds is not None and rpo_seconds <= target.rpo_hours * 3600 and latest is not None
    first_pending = latest is None and target.created_at > now - timedelta(hours=target.rpo_hours)
    missing = []
    for offset in range(target.recovery_window_days):
        day = window_start + timedelta(days=offset)
        if day in days_covered or day < target.created_at.date():
            continue
        if day == now.date() and (rpo_met or first_pending):
            continue
        missing.append(day)
    restore_ms = passed.order_by("-finished_at").values_list("restore_ms", flat=True).first()
    return Readiness(
        target,
        latest,
        None if rpo_seconds is None else rpo_seconds / 3600,
        rpo_met,
        restore_ms,
        target.recovery_window_days,
        missing,
        last_failure(target),
        pitr=True,
        window_start=target.pitr_window_start,
        window_end=target.pitr_window_end,
        rpo_seconds=rpo_seconds,
        pitr_error=target.pitr_error,
    )


def last_failure(target: BackupTarget) -> str:
    """What failed most recently, if it is still the latest word: the newest backup or verification failed."""
    backup = target.backups.exclude(status=BackupStatus.RUNNING).order_by("-started_at", "-id").first()
    if backup is not None and backup.status == BackupStatus.FAILED:
        return f"latest backup #{backup.pk} failed: {backup.error.splitlines()[0] if backup.error else 'no message'}"
    verification = (
        Verification.objects.filter(backup__target=target)
        .exclude(status=VerificationResult.RUNNING)
        .order_by("-started_at", "-id")
        .first()
    )
    if verification is not None and verification.status == VerificationResult.FAILED:
        return f"latest verification (backup #{verification.backup_id}) failed at {verification.failed_check}"
    return ""


def failures_by_target() -> dict[str, str]:
    """Per enabled target (by name): ``last_failure``, "" while its latest word is good (alerting's
    "backup or verification failed" rule; a failed drill has its own, through ``drill_failures``)."""
    return {target.name: last_failure(target) for target in BackupTarget.objects.filter(enabled=True)}


def all_readiness(*, now: datetime | None = None) -> list[Readiness]:
    return [readiness(target, now=now) for target in BackupTarget.objects.filter(enabled=True)]


def latest_verified_age_hours(*, now: datetime | None = None) -> float | None:
    """The oldest "latest verified backup" age among enabled targets, in hours, for monitoring.

    A target with no verified backup counts from its creation: once that passes the threshold, the
    missing first backup alerts like a stale one. None when there is no enabled target.
    """
    now = now or timezone.now()
    ages = []
    for target in BackupTarget.objects.filter(enabled=True):
        latest = target.backups.verified().order_by("-started_at").values_list("started_at", flat=True).first()
        ages.append((now - (latest or target.created_at)).total_seconds() / 3600)
    return max(ages) if ages else None


def failing_targets() -> list[tuple[BackupTarget, str]]:
    """Enabled targets whose latest backup or latest verification failed, with what failed."""
    failing = []
    for target in BackupTarget.objects.filter(enabled=True):
        message = last_failure(target)
        if message:
            failing.append((target, message))
    return failing


def status(*, now: datetime | None = None) -> list[dict[str, Any]]:
    """Per target: the latest backups and verifications, for the status API."""
    now = now or timezone.now()
    rows = []
    for target in BackupTarget.objects.all():
        latest = target.backups.order_by("-started_at", "-id").first()
        verification = (
            Verification.objects.filter(backup__target=target)
            .select_related("backup")
            .order_by("-started_at", "-id")
            .first()
        )
        rows.append(
            {
                "target": target.name,
                "enabled": target.enabled,
                "source": target.source_label,
                "scheduleHours": target.interval_hours,
                "retention": {"days": target.retention_days, "count": target.retention_count},
                "storages": [storage_dict(target, name) for name in target.storages],
                "backups": target.backups.succeeded().count(),
                "latestBackup": backup_dict(latest) if latest else None,
                "latestVerification": verification_dict(verification) if verification else None,
                "nextBackupDue": next_due(target, latest).isoformat() if target.enabled else None,
            }
        )
        if target.is_pitr:
            rows[-1]["kind"] = target.kind
            rows[-1]["pointInTime"] = pitr_readiness(target, now=now).point_in_time()
    return rows


RETRY_AFTER_FAILURE = timedelta(hours=1)


def next_due(target: BackupTarget, latest: Backup | None) -> datetime:
    """When the next scheduled backup is due: an interval after the latest, or an hour after a failed one."""
    if latest is None:
        return target.created_at
    interval = timedelta(hours=target.interval_hours)
    if latest.status == BackupStatus.FAILED:
        interval = min(interval, RETRY_AFTER_FAILURE)
    return latest.started_at + interval


def backup_dict(backup: Backup) -> dict[str, Any]:
    return {
        "id": backup.pk,
        "status": backup.status,
        "engine": backup.engine,
        "startedAt": backup.started_at.isoformat(),
        "finishedAt": backup.finished_at.isoformat() if backup.finished_at else None,
        "durationMs": backup.duration_ms,
        "sizeBytes": backup.size_bytes,
        "sha256": backup.sha256,
        "encrypted": backup.encrypted,
        "plaintextSha256": backup.plaintext_sha256 or None,
        "toolVersions": backup.tool_versions,
        "tables": len(backup.manifest.get("tables", {})),
        "rows": sum(backup.manifest.get("tables", {}).values()),
        "verification": backup.verification or None,
        "error": backup.error or None,
        **({"pgbackrest": backup.manifest} if backup.engine == "pgbackrest" else {}),
        "copies": [copy_dict(copy) for copy in backup.copies.all()],
    }


def copy_dict(copy: BackupCopy) -> dict[str, Any]:
    return {
        "storage": copy.storage,
        "status": copy.status,
        "sizeBytes": copy.size_bytes,
        "sha256": copy.sha256 or None,
        "verifiedAt": copy.verified_at.isoformat() if copy.verified_at else None,
        "attempts": copy.attempts,
        "nextAttemptAt": copy.next_attempt_at.isoformat() if copy.next_attempt_at else None,
        "error": copy.error or None,
    }


def verification_dict(verification: Verification) -> dict[str, Any]:
    return {
        "id": verification.pk,
        "backupId": verification.backup_id,
        "status": verification.status,
        "startedAt": verification.started_at.isoformat(),
        "durationMs": verification.duration_ms,
        "restoreMs": verification.restore_ms,
        "failedCheck": verification.failed_check or None,
        "error": verification.error or None,
        "checks": verification.checks,
        "scratchDropped": verification.scratch_dropped,
        **({"targetTime": verification.target_time.isoformat()} if verification.target_time else {}),
        # Where the restored copy was read: a pgBackRest target's verification reads its repository instead.
        "storage": None if verification.backup.engine == "pgbackrest" else verification.storage or LOCAL_STORAGE,
    }


def storage_dict(target: BackupTarget, storage: str) -> dict[str, Any]:
    """One storage of a target: its newest verified copy, and the copies waiting or failed there."""
    copies = BackupCopy.objects.filter(backup__target=target, storage=storage)
    newest = copies.filter(status="verified").order_by("-backup__started_at", "-backup_id").first()
    return {
        "storage": storage,
        "latestVerifiedBackupId": newest.backup_id if newest else None,
        "latestVerifiedAt": newest.verified_at.isoformat() if newest and newest.verified_at else None,
        "failed": copies.filter(status="failed").count(),
        "waiting": copies.filter(status__in=["pending", "uploading"]).count(),
    }


# --- Restore drills ------------------------------------------------------------------------------

DRILL_HISTORY = 10


@dataclass
class DrillReadiness:
    """A drilled recovery plan: its latest drill, the last that passed, and whether that is recent enough.

    ``overdue``: no drill passed within the plan's schedule; ``failing``: the latest finished drill failed.
    """

    plan: DrillPlan
    latest: Drill | None
    last_passed: Drill | None
    next_due: datetime | None
    overdue: bool
    history: list[Drill] = field(default_factory=list)

    @property
    def failing(self) -> bool:
        finished = next((drill for drill in self.history if drill.status != DrillStatus.RUNNING), None)
        return finished is not None and finished.status == DrillStatus.FAILED

    @property
    def running(self) -> Drill | None:
        return self.latest if self.latest is not None and self.latest.status == DrillStatus.RUNNING else None

    @property
    def state(self) -> str:
        if self.failing:
            return "failed"
        if self.overdue:
            return "at_risk"
        return "ready"

    @property
    def state_words(self) -> str:
        if self.failing:
            return "latest drill failed"
        if self.overdue:
            if self.last_passed is None:
                return "first drill running" if self.running else "never drilled"
            return "drill overdue"
        return "drilled"

    @property
    def problems(self) -> list[str]:
        problems = []
        finished = next((drill for drill in self.history if drill.status != DrillStatus.RUNNING), None)
        if finished is not None and finished.status == DrillStatus.FAILED:
            reason = finished.error.splitlines()[0][:200] if finished.error else "no message"
            problems.append(f"latest drill #{finished.pk} failed: {reason}")
        if self.overdue:
            if self.last_passed is None:
                problems.append("no drill has passed yet")
            else:
                problems.append(
                    f"last passed drill is older than its {self.plan.interval_hours} h schedule "
                    f"({self.last_passed.started_at:%Y-%m-%d %H:%M} UTC)"
                )
        return problems

    def as_dict(self) -> dict[str, Any]:
        return {
            "plan": self.plan.name,
            "environment": self.plan.environment,
            "target": self.plan.target,
            "scheduleHours": self.plan.interval_hours,
            "ready": self.state == "ready",
            "overdue": self.overdue,
            "nextDue": self.next_due.isoformat() if self.next_due else None,
            "lastPassed": drill_dict(self.last_passed) if self.last_passed else None,
            "rtoAchievedSeconds": (
                None if self.last_passed is None or self.last_passed.rto_ms is None else self.last_passed.rto_ms / 1000
            ),
            "history": [drill_dict(drill) for drill in self.history],
            "problems": self.problems,
        }


def drill_readiness(plan: DrillPlan, *, now: datetime | None = None) -> DrillReadiness:
    from backups.drills import next_drill_due

    now = now or timezone.now()
    history = list(
        Drill.objects.filter(plan=plan.name).select_related("backup").order_by("-started_at", "-id")[:DRILL_HISTORY]
    )
    latest = history[0] if history else None
    last_passed = Drill.objects.filter(plan=plan.name, status=DrillStatus.PASSED).order_by("-started_at").first()
    window = timedelta(hours=plan.interval_hours) + DRILL_GRACE
    overdue = last_passed is None or last_passed.started_at < now - window
    return DrillReadiness(plan, latest, last_passed, next_drill_due(plan, latest, now=now), overdue, history)


# A drill is queued within minutes of being due and takes a while: no warning for that hour.
DRILL_GRACE = timedelta(hours=1)


def drills_readiness(*, now: datetime | None = None) -> list[DrillReadiness]:
    """Every recovery plan drilled on a schedule (``controlplane.drills``), by name."""
    return [drill_readiness(plan, now=now) for plan in drill_plans() if plan.drilled]


def _latest_finished_drill(plan: str) -> Drill | None:
    return Drill.objects.filter(plan=plan).exclude(status=DrillStatus.RUNNING).order_by("-started_at", "-id").first()


def drill_failures() -> dict[str, str]:
    """Per plan drilled or drilled before (by name): why its latest finished drill failed, or "" while it
    passed or the plan is no longer drilled. Alerting's "restore drill failed" rule reads these."""
    drilled = {plan.name for plan in drill_plans() if plan.drilled}
    failures = {}
    for name in sorted(drilled | set(Drill.objects.values_list("plan", flat=True).distinct())):
        if name not in drilled:  # no longer drilled (or gone): an alert it raised resolves
            failures[name] = ""
            continue
        finished = _latest_finished_drill(name)
        failed = finished is not None and finished.status == DrillStatus.FAILED
        failures[name] = f"drill #{finished.pk} of {name} failed: {finished.error}" if finished and failed else ""
    return failures


def drill_failure(plan: str) -> dict[str, Any] | None:
    """The latest finished drill of ``plan`` when it failed, in words for a notification: which check
    failed and why, and which backup it restored (None: it had none to restore). None while it passed."""
    finished = _latest_finished_drill(plan)
    if finished is None or finished.status != DrillStatus.FAILED:
        return None
    check, _, detail = finished.error.partition(": ")
    backup = finished.backup
    return {
        "plan": plan,
        "drill": finished.pk,
        "target": finished.target.name,
        "check": check,
        "error": detail,
        "backup": backup.pk if backup else None,
        "backup_taken_at": backup.started_at.isoformat() if backup else None,
        "finished_at": finished.finished_at.isoformat() if finished.finished_at else None,
    }


def drill_dict(drill: Drill) -> dict[str, Any]:
    return {
        "id": drill.pk,
        "plan": drill.plan,
        "status": drill.status,
        "startedAt": drill.started_at.isoformat(),
        "finishedAt": drill.finished_at.isoformat() if drill.finished_at else None,
        "rtoMs": drill.rto_ms,
        "backupId": drill.backup_id,
        "checks": drill.checks,
        "error": drill.error or None,
        "scratchDropped": drill.scratch_dropped,
        "progress": drill.progress or None,
    }


# --- Work under way ------------------------------------------------------------------------------


@dataclass
class Running:
    """A backup, upload, verification or drill that is running, with its last written progress."""

    kind: str
    label: str
    started_at: datetime
    progress: dict[str, Any]

    @property
    def line(self) -> str:
        from backups.progress import describe

        return describe(self.progress)

    def as_dict(self) -> dict[str, Any]:
        """The status API's form: the progress as last written, and in words."""
        return {
            "kind": self.kind,
            "label": self.label,
            "startedAt": self.started_at.isoformat(),
            "progress": self.progress or None,
            "line": self.line,
        }


def running_work() -> list[Running]:
    """Everything under way, oldest first: the Backups page's live part."""
    work = [
        Running("backup", f"backup #{b.pk} of {b.target.name}", b.started_at, b.progress)
        for b in Backup.objects.filter(status=BackupStatus.RUNNING).select_related("target")
    ]
    work += [
        Running("verification", f"verification of backup #{v.backup_id} ({v.backup.target.name})", v.started_at,
                v.progress)
        for v in Verification.objects.filter(status=VerificationResult.RUNNING).select_related("backup__target")
    ]  # fmt: skip
    work += [
        Running("upload", f"copy of backup #{c.backup_id} ({c.backup.target.name}) to {c.storage}", c.started_at,
                c.progress)
        for c in BackupCopy.objects.filter(status=CopyStatus.UPLOADING, started_at__isnull=False)
        .select_related("backup__target")
        if c.started_at is not None
    ]  # fmt: skip
    work += [
        Running("drill", f"drill #{d.pk} of {d.plan}", d.started_at, d.progress)
        for d in Drill.objects.filter(status=DrillStatus.RUNNING)
    ]
    return sorted(work, key=lambda running: running.started_at)
