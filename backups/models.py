"""Backup targets, the backups taken of them and the verifications that prove a backup restores."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone

# The backups storage every dump lands in first (a local disk); copies go to the target's copy_storages.
LOCAL_STORAGE = "backups"
NOT_BACKUP_STORAGES = {LOCAL_STORAGE, "default", "staticfiles"}
ENV_NAME = RegexValidator(r"^[A-Z][A-Z0-9_]{0,99}$", "an environment variable name: A-Z, 0-9 and _")
STANZA = RegexValidator(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", "a pgBackRest stanza name: letters, digits, _ . -")
ABSOLUTE_PATH = RegexValidator(r"^/", "an absolute path")
OS_USER = RegexValidator(r"^[a-z_][a-z0-9_-]{0,31}$", "a user name of this machine")


class TargetKind(models.TextChoices):
    DUMP = "dump", "dump (pg_dump or SQLite)"
    PGBACKREST = "pgbackrest", "pgBackRest (point-in-time recovery)"


class BackupTarget(models.Model):
    """A database to back up. Its URL lives in an environment variable; the secret never enters here.

    An empty ``url_env`` means the control plane's own database (``DATABASE_URL`` or the embedded
    SQLite file), which is the target ``default`` out of the box.
    """

    name = models.SlugField(max_length=50, unique=True)
    url_env = models.CharField(
        "URL variable",
        max_length=100,
        blank=True,
        validators=[ENV_NAME],
        help_text="Environment variable that holds the database URL; empty for the control plane's own database.",
    )
    interval_hours = models.PositiveIntegerField(
        default=24,
        validators=[MinValueValidator(1), MaxValueValidator(24 * 7)],
        help_text="Schedule: a backup is taken when the latest one is this many hours old.",
    )
    retention_days = models.PositiveIntegerField(
        default=14,
        validators=[MaxValueValidator(3650)],
        help_text="Keep backups younger than this many days (0: no age rule).",
    )
    retention_count = models.PositiveIntegerField(
        default=0,
        validators=[MaxValueValidator(10_000)],
        help_text="Keep at least this many newest backups (0: no count rule).",
    )
    rpo_hours = models.PositiveIntegerField(
        "RPO target (hours)",
        default=26,
        validators=[MinValueValidator(1), MaxValueValidator(24 * 30)],
        help_text="The latest verified backup must be younger than this.",
    )
    recovery_window_days = models.PositiveIntegerField(
        default=7,
        validators=[MinValueValidator(1), MaxValueValidator(365)],
        help_text="Every day of this many days must have a verified backup.",
    )
    enabled = models.BooleanField(default=True, help_text="Scheduled backups and verifications run.")
    copy_storages = models.JSONField(
        "off-site storages",
        default=list,
        blank=True,
        help_text='Names of further Django storages (STORAGES) each backup is copied to, e.g. ["offsite"]; '
        "the local backups storage always holds one.",
    )
    created_at = models.DateTimeField(default=timezone.now)
    # A pgBackRest target: a PostgreSQL cluster whose WAL pgBackRest archives. The URL variable names a
    # database of that cluster (for the commit a verification needs and the schema it compares).
    kind = models.CharField(max_length=12, choices=TargetKind.choices, default=TargetKind.DUMP)
    pgbackrest_stanza = models.CharField("stanza", max_length=64, blank=True, validators=[STANZA])
    pgbackrest_config = models.CharField(
        "pgBackRest config",
        max_length=300,
        blank=True,
        validators=[ABSOLUTE_PATH],
        help_text="The pgbackrest.conf with the repository settings; empty for pgBackRest's default.",
    )
    pgbackrest_repo_path = models.CharField(
        "repository path", max_length=300, blank=True, validators=[ABSOLUTE_PATH], help_text="--repo1-path, if set."
    )
    pg_data_dir = models.CharField(
        "data directory", max_length=300, blank=True, validators=[ABSOLUTE_PATH], help_text="--pg1-path, if set."
    )
    pg_port = models.PositiveIntegerField(
        "port", null=True, blank=True, validators=[MinValueValidator(1), MaxValueValidator(65535)]
    )
    pg_socket_dir = models.CharField(
        "socket directory", max_length=300, blank=True, validators=[ABSOLUTE_PATH], help_text="--pg1-socket-path."
    )
    os_user = models.CharField(
        "OS user",
        max_length=32,
        blank=True,
        validators=[OS_USER],
        help_text="The cluster's OS user: pgBackRest and the scratch server run as it (the worker as root).",
    )
    full_every_days = models.PositiveIntegerField(
        default=7,
        validators=[MinValueValidator(1), MaxValueValidator(60)],
        help_text="A full backup when the latest full one is this many days old; differential otherwise.",
    )
    # What pgbackrest info last said: the recoverable window (oldest backup's end to newest archived WAL).
    pitr_window_start = models.DateTimeField(null=True, blank=True)
    pitr_window_end = models.DateTimeField(null=True, blank=True)
    pitr_checked_at = models.DateTimeField(null=True, blank=True)
    pitr_error = models.TextField(blank=True)
    # An operator's "back up now" whose task the broker did not take: run_due sends it again.
    dispatch_error = models.TextField(blank=True)
    dispatch_requested_by = models.CharField(max_length=150, blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def get_absolute_url(self) -> str:
        return reverse("backups:target", args=[self.name])

    def clean(self) -> None:
        if self.kind == TargetKind.PGBACKREST:
            if not self.pgbackrest_stanza:
                raise ValidationError({"pgbackrest_stanza": "a pgBackRest target needs its stanza"})
            if not self.url_env:
                raise ValidationError(
                    {"url_env": "a pgBackRest target needs the URL variable of a database of its cluster"}
                )
            if self.copy_storages:
                # No dump file to copy: pgBackRest's own repositories (repo2 and on, in its config) hold copies.
                raise ValidationError(
                    {
                        "copy_storages": "a pgBackRest target has no dump to copy: "
                        "configure a further repository in its pgBackRest config instead"
                    }
                )
        self._clean_copy_storages()
        if self.retention_days and self.recovery_window_days and self.retention_days < self.recovery_window_days:
            raise ValidationError(
                {
                    "retention_days": f"keeps {self.retention_days} days, fewer than the "
                    f"{self.recovery_window_days}-day recovery window"
                }
            )

    @property
    def source_label(self) -> str:
        if self.is_pitr:
            return f"pgBackRest stanza {self.pgbackrest_stanza} (${self.url_env})"
        return f"${self.url_env}" if self.url_env else "the control plane's own database"

    @property
    def is_pitr(self) -> bool:
        return self.kind == TargetKind.PGBACKREST

    def rpo_seconds(self, *, now: datetime | None = None) -> float | None:
        """The real recovery point of a pgBackRest target: the age of its newest archived WAL."""
        if self.pitr_window_end is None:
            return None
        return ((now or timezone.now()) - self.pitr_window_end).total_seconds()

    @property
    def storages(self) -> list[str]:
        """Where each backup of this target is kept: the local backups storage, then the off-site ones.
        Empty for a pgBackRest target: its backups live in its pgBackRest repository, not in any storage."""
        if self.is_pitr:
            return []
        return [LOCAL_STORAGE, *self.copy_storages]

    def _clean_copy_storages(self) -> None:
        if self.copy_storages is None:  # a form that leaves the field out (or empty) means none
            self.copy_storages = []
        names = self.copy_storages
        if not isinstance(names, list) or not all(isinstance(name, str) and name for name in names):
            raise ValidationError({"copy_storages": 'a list of storage names, e.g. ["offsite"]'})
        for name in names:
            if name in NOT_BACKUP_STORAGES:
                raise ValidationError({"copy_storages": f"{name!r} is not a storage for backups copies"})
            if name not in settings.STORAGES:
                known = ", ".join(sorted(set(settings.STORAGES) - NOT_BACKUP_STORAGES)) or "none"
                raise ValidationError({"copy_storages": f"no storage named {name!r} in STORAGES (configured: {known})"})
        if len(set(names)) != len(names):
            raise ValidationError({"copy_storages": "a storage is named twice"})


class BackupStatus(models.TextChoices):
    RUNNING = "running", "running"
    SUCCEEDED = "succeeded", "succeeded"
    FAILED = "failed", "failed"


class VerificationResult(models.TextChoices):
    NONE = "", "not verified"
    RUNNING = "running", "verifying"
    PASSED = "passed", "passed"
    FAILED = "failed", "failed"


class BackupQuerySet(models.QuerySet):
    def succeeded(self) -> BackupQuerySet:
        return self.filter(status=BackupStatus.SUCCEEDED)

    def verified(self) -> BackupQuerySet:
        return self.filter(status=BackupStatus.SUCCEEDED, verification=VerificationResult.PASSED)


class Backup(models.Model):
    """One dump of a target. ``file`` is a name in the backups storage, set only once the dump is complete."""

    target = models.ForeignKey(BackupTarget, on_delete=models.PROTECT, related_name="backups")
    status = models.CharField(max_length=10, choices=BackupStatus.choices, default=BackupStatus.RUNNING)
    engine = models.CharField(max_length=20)  # "postgresql" or "sqlite"
    started_at = models.DateTimeField(default=timezone.now)  # the recovery point
    # Stamped by the worker while it runs: a running row whose stamp is old has no worker any more.
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    file = models.CharField(max_length=300, blank=True)
    size_bytes = models.BigIntegerField(null=True, blank=True)
    sha256 = models.CharField(max_length=64, blank=True)  # of what is stored: the ciphertext when encrypted
    # Encrypted at rest with age (BACKUP_AGE_RECIPIENTS): size_bytes and sha256 are the ciphertext's, checked
    # without the key; the plaintext's are checked by a verification as it decrypts.
    encrypted = models.BooleanField(default=False)
    plaintext_sha256 = models.CharField(max_length=64, blank=True)
    plaintext_size_bytes = models.BigIntegerField(null=True, blank=True)
    tool_versions = models.JSONField(default=dict, blank=True)
    manifest = models.JSONField(default=dict, blank=True)  # {"tables": {name: rows}, "schema_sha256": ...}
    error = models.TextField(blank=True)
    requested_by = models.CharField(max_length=150, blank=True)
    # The latest verification's outcome, kept here so lists and readiness need no join.
    verification = models.CharField(
        max_length=10, choices=VerificationResult.choices, default=VerificationResult.NONE, blank=True
    )
    verified_at = models.DateTimeField(null=True, blank=True)
    # A requested verification whose task the broker did not take: run_due sends it again.
    verify_dispatch_error = models.TextField(blank=True)
    verify_requested_by = models.CharField(max_length=150, blank=True)
    # How far a running backup is (backups.progress), written with the heartbeat: never per chunk.
    progress = models.JSONField(default=dict, blank=True)

    objects = BackupQuerySet.as_manager()

    class Meta:
        ordering = ["-started_at", "-id"]
        indexes = [
            # the target page and readiness: a target's backups, newest first
            models.Index(fields=["target", "-started_at"], name="backup_target_started"),
        ]
        constraints = [
            # at most one backup of a target runs at a time
            models.UniqueConstraint(
                fields=["target"], condition=Q(status="running"), name="backup_one_running_per_target"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.target.name} #{self.pk} ({self.started_at:%Y-%m-%d %H:%M} UTC)"

    def get_absolute_url(self) -> str:
        return reverse("backups:target", args=[self.target.name]) + f"#backup-{self.pk}"

    def lost_worker(self, *, now: datetime | None = None) -> str:
        """Why this running backup has no worker any more, or "" while it may still have one."""
        return _lost_worker(self.status == BackupStatus.RUNNING, self.started_at, self.heartbeat_at, now)


class Verification(models.Model):
    """One restore of a backup into a scratch database, with each check's result."""

    backup = models.ForeignKey(Backup, on_delete=models.CASCADE, related_name="verifications")
    status = models.CharField(max_length=10, choices=VerificationResult.choices, default=VerificationResult.RUNNING)
    started_at = models.DateTimeField(default=timezone.now)
    heartbeat_at = models.DateTimeField(null=True, blank=True)  # as Backup.heartbeat_at
    finished_at = models.DateTimeField(null=True, blank=True)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    restore_ms = models.PositiveIntegerField(null=True, blank=True)  # the RTO estimate
    scratch = models.CharField(max_length=300, blank=True)  # the scratch database's name (never a URL)
    # A point-in-time verification: the time it recovered to (pgBackRest targets).
    target_time = models.DateTimeField(null=True, blank=True)
    scratch_dropped = models.BooleanField(default=False)
    checks = models.JSONField(default=list, blank=True)  # [{"name", "status", "detail", "ms"}]
    failed_check = models.CharField(max_length=50, blank=True)
    error = models.TextField(blank=True)
    requested_by = models.CharField(max_length=150, blank=True)
    # The storage whose copy was restored (an off-site one proves the disaster case); the local one when empty.
    storage = models.CharField(max_length=50, blank=True)
    progress = models.JSONField(default=dict, blank=True)  # as Backup.progress

    class Meta:
        ordering = ["-started_at", "-id"]
        constraints = [
            # a backup is verified by one run at a time
            models.UniqueConstraint(
                fields=["backup"], condition=Q(status="running"), name="verification_one_running_per_backup"
            ),
        ]

    def __str__(self) -> str:
        return f"verification #{self.pk} of backup #{self.backup_id}"

    def lost_worker(self, *, now: datetime | None = None) -> str:
        """Why this running verification has no worker any more, or "" while it may still have one."""
        return _lost_worker(self.status == VerificationResult.RUNNING, self.started_at, self.heartbeat_at, now)


class DrillStatus(models.TextChoices):
    RUNNING = "running", "running"
    PASSED = "passed", "passed"
    FAILED = "failed", "failed"


class Drill(models.Model):
    """One restore drill of a recovery plan: its target's latest verified backup restored into a scratch
    database (a pgBackRest target's latest set, to the end of its archived WAL, into a scratch data
    directory: ``scratch`` is then that directory's path), the plan's smoke queries run there read-only,
    the time to that working database measured.

    The plan belongs to ``deployments``, which backups may not import: a drill names it by its failure
    type (``plan``) and keeps what it was drilled with (target, schedule, queries), read through
    ``controlplane.drills`` when it started. So history stays readable after the plan changes or goes.
    """

    plan = models.SlugField(max_length=50)  # deployments.RecoveryPlan.failure_type
    target = models.ForeignKey(BackupTarget, on_delete=models.PROTECT, related_name="drills")
    backup = models.ForeignKey(Backup, on_delete=models.SET_NULL, null=True, blank=True, related_name="drills")
    status = models.CharField(max_length=10, choices=DrillStatus.choices, default=DrillStatus.RUNNING)
    started_at = models.DateTimeField(default=timezone.now)
    heartbeat_at = models.DateTimeField(null=True, blank=True)  # as Backup.heartbeat_at
    finished_at = models.DateTimeField(null=True, blank=True)
    # The RTO achieved: from the start of the restore (the backup file fetched and checked included; for a
    # pgBackRest target, from pgbackrest restore to the server promoted) to the last smoke query answering
    # on the scratch database.
    rto_ms = models.PositiveIntegerField("RTO achieved (ms)", null=True, blank=True)
    interval_hours = models.PositiveIntegerField(default=0)  # the plan's schedule when drilled
    smoke_queries = models.JSONField(default=list, blank=True)
    checks = models.JSONField(default=list, blank=True)  # [{"name", "status", "detail", "ms"}]
    scratch = models.CharField(max_length=300, blank=True)
    scratch_dropped = models.BooleanField(default=False)
    error = models.TextField(blank=True)
    requested_by = models.CharField(max_length=150, blank=True)
    progress = models.JSONField(default=dict, blank=True)  # as Backup.progress

    class Meta:
        ordering = ["-started_at", "-id"]
        indexes = [
            # the Backups page, readiness and the schedule: a plan's drills, newest first
            models.Index(fields=["plan", "-started_at"], name="drill_plan_started"),
        ]
        constraints = [
            # a plan is drilled by one run at a time
            models.UniqueConstraint(fields=["plan"], condition=Q(status="running"), name="drill_one_running_per_plan"),
        ]

    def __str__(self) -> str:
        return f"drill #{self.pk} of {self.plan}"

    def get_absolute_url(self) -> str:
        return reverse("backups:index") + f"#drill-{self.pk}"

    def lost_worker(self, *, now: datetime | None = None) -> str:
        """Why this running drill has no worker any more, or "" while it may still have one."""
        return _lost_worker(self.status == DrillStatus.RUNNING, self.started_at, self.heartbeat_at, now)


class CopyStatus(models.TextChoices):
    PENDING = "pending", "waiting to upload"
    UPLOADING = "uploading", "uploading"
    VERIFIED = "verified", "verified"
    FAILED = "failed", "failed"


class BackupCopy(models.Model):
    """A backup's file in one storage. Counted only once read back with the backup's size and sha256."""

    backup = models.ForeignKey(Backup, on_delete=models.CASCADE, related_name="copies")
    storage = models.CharField(max_length=50)  # a name in settings.STORAGES
    name = models.CharField(max_length=300, blank=True)  # the object's name in that storage, once stored
    status = models.CharField(max_length=10, choices=CopyStatus.choices, default=CopyStatus.PENDING)
    size_bytes = models.BigIntegerField(null=True, blank=True)  # as read back
    sha256 = models.CharField(max_length=64, blank=True)  # as read back
    attempts = models.PositiveIntegerField(default=0)
    started_at = models.DateTimeField(null=True, blank=True)  # of the latest attempt
    duration_ms = models.PositiveIntegerField(null=True, blank=True)  # upload and read-back of the latest attempt
    verified_at = models.DateTimeField(null=True, blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)  # a failed or unsent copy is tried again then
    error = models.TextField(blank=True)
    # How far an upload is (backups.progress), as Backup.progress: written by the upload's progress thread.
    progress = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["backup", "storage"]
        indexes = [
            # run_due: the copies waiting for an upload (pending or failed) whose next attempt is due
            models.Index(fields=["status", "next_attempt_at"], name="backupcopy_status_next"),
        ]
        constraints = [
            models.UniqueConstraint(fields=["backup", "storage"], name="backupcopy_one_per_storage"),
        ]

    def __str__(self) -> str:
        return f"copy of backup #{self.backup_id} in {self.storage}"

    def lost_worker(self, *, now: datetime | None = None) -> str:
        """Why this uploading copy has no worker any more, or "" while it may still have one."""
        if self.status != CopyStatus.UPLOADING or self.started_at is None:
            return ""
        now = now or timezone.now()
        if self.started_at < now - timedelta(seconds=settings.BACKUP_TIMEOUT_SECONDS + 60):
            return "the upload did not finish in time: the worker was lost or the upload hung"
        return ""


def _lost_worker(running: bool, started_at: datetime, heartbeat_at: datetime | None, now: datetime | None) -> str:
    """A running row is lost when its heartbeat stopped (the worker was killed or cut from this database)
    or, the heartbeat still going, when it outlived the timeout (a hung run). A row without a heartbeat
    (claimed by a release before heartbeats) is judged by the timeout alone."""
    if not running:
        return ""
    now = now or timezone.now()
    silent = timedelta(seconds=settings.BACKUP_HEARTBEAT_TIMEOUT_SECONDS)
    if heartbeat_at is not None and heartbeat_at < now - silent:
        return (
            f"worker stopped: no progress since {heartbeat_at:%Y-%m-%d %H:%M:%S} UTC "
            f"(no heartbeat for {int((now - heartbeat_at).total_seconds())} s: the worker was killed "
            "or lost its connection to the control plane's database)"
        )
    if started_at < now - timedelta(seconds=settings.BACKUP_TIMEOUT_SECONDS + 60):
        return "did not finish in time: the worker was lost or the run hung"
    return ""
