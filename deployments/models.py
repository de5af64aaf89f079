"""Environments, their pipelines, deployments with their step runs and log, and recovery plans."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator
from django.db import models
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone

from controlplane.drills import DEFAULT_INTERVAL_HOURS as DEFAULT_DRILL_INTERVAL_HOURS
from controlplane.models import Environment as GroundEnvironment


class Pipeline(models.Model):
    """An ordered list of steps (see ``deployments.steps`` for their schema)."""

    name = models.SlugField(max_length=100, unique=True)
    description = models.CharField(max_length=500, blank=True)
    steps = models.JSONField(default=list, help_text="A JSON list of steps; see the README for each kind's fields.")
    # A setting of the whole pipeline, not a step: the steps are a list read by index everywhere (runner,
    # rollback, pages), so it could live in that JSON only by changing its shape or posing as a step.
    silence_rules = models.JSONField(
        default=list,
        blank=True,
        help_text="Names of alert rules silenced while a deployment of this pipeline runs "
        '(e.g. ["backend up"]); the silences end when the deployment ends, whatever its outcome.',
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Environment(models.Model):
    """What deployments keep about one of the ground's environments (``controlplane.Environment``):
    the pipeline that deploys there, the product's health URL and, through its deployments, the lock.

    The environment itself is the ground's row, shared with flags; ``name`` is its name, kept here too
    so that every lookup, page, API answer and ``manage.py deploy <env>`` keeps naming it in one query.
    ``save`` keeps the two the same: a row made by name joins (or makes) the ground environment of that
    name, and the ground's names are fixed once made.
    """

    environment = models.OneToOneField(GroundEnvironment, on_delete=models.PROTECT, related_name="deployment_target")
    name = models.SlugField(max_length=50, unique=True)
    health_url = models.URLField(
        blank=True, help_text="The product's health URL here; health gates poll it unless a step names another."
    )
    pipeline = models.ForeignKey(Pipeline, on_delete=models.PROTECT, related_name="environments")

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self.environment_id is None and self.name:
            self.environment = GroundEnvironment.objects.ensure(self.name)
        elif not self.name:
            self.name = self.environment.name
        elif self.name != self.environment.name:
            raise ValueError(f"deployments environment {self.name!r} must be named as its environment")
        super().save(*args, **kwargs)


class DeploymentType(models.TextChoices):
    DEPLOY = "deploy", "deploy"
    ROLLBACK = "rollback", "roll back to the previous release"
    RECOVERY = "recovery", "recovery plan"
    GUARDED = "guarded", "guarded rollout"


class DeploymentStatus(models.TextChoices):
    QUEUED = "queued", "queued"
    RUNNING = "running", "running"
    SUCCEEDED = "succeeded", "succeeded"
    FAILED = "failed", "failed"
    ROLLING_BACK = "rolling_back", "rolling back"
    ROLLED_BACK = "rolled_back", "rolled back"
    ROLLBACK_FAILED = "rollback_failed", "rollback failed"
    CANCELLED = "cancelled", "cancelled"


ACTIVE = (DeploymentStatus.QUEUED, DeploymentStatus.RUNNING, DeploymentStatus.ROLLING_BACK)
FINISHED = (
    DeploymentStatus.SUCCEEDED,
    DeploymentStatus.FAILED,
    DeploymentStatus.ROLLED_BACK,
    DeploymentStatus.ROLLBACK_FAILED,
    DeploymentStatus.CANCELLED,
)


class DeploymentQuerySet(models.QuerySet):
    def active(self) -> DeploymentQuerySet:
        return self.filter(status__in=ACTIVE)

    def holding_environment_lock(self) -> DeploymentQuerySet:
        """Deployments that take the environment's deploy lock: all but guarded rollouts (their flag's lock)."""
        return self.filter(flag="")


class Deployment(models.Model):
    environment = models.ForeignKey(Environment, on_delete=models.PROTECT, related_name="deployments")
    version = models.CharField(max_length=200)
    type = models.CharField(max_length=10, choices=DeploymentType.choices, default=DeploymentType.DEPLOY)
    recovery_type = models.CharField(max_length=50, blank=True)  # the plan's failure type, for recoveries
    dry_run = models.BooleanField(default=False)
    status = models.CharField(max_length=20, choices=DeploymentStatus.choices, default=DeploymentStatus.QUEUED)
    requested_by = models.CharField(max_length=150)
    requested_by_user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    steps = models.JSONField(default=list)  # the pipeline's steps as they were when this was requested
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    worker = models.CharField(max_length=200, blank=True)
    claim = models.CharField(max_length=32, blank=True)  # who may run it now (set by each claim)
    cancel_requested = models.BooleanField(default=False)
    error = models.TextField(blank=True)
    # When the broker last took its run task (null: not yet). A request sends it after commit; the
    # reaper sends again what is queued and was never taken, or that no worker took for a while.
    dispatched_at = models.DateTimeField(null=True, blank=True)
    dispatch_error = models.TextField(blank=True)  # why the last send failed; emptied by one that succeeds
    # A guarded rollout's flag (``deployments.guarded``): its lock is the flag's in the environment, not the
    # environment's deploy lock (see the constraints). Empty for every other deployment.
    flag = models.CharField(max_length=100, blank=True)
    # An operator's pause of a guarded rollout (its hold keeps measuring but does not end; no step starts),
    # and the last "skip ahead" (a hold that started before it ends at once). Read by the runner's heartbeat.
    paused = models.BooleanField(default=False)
    skip_requested_at = models.DateTimeField(null=True, blank=True)

    objects = DeploymentQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            # the list page and "last deployment of an environment"
            models.Index(fields=["environment", "-created_at"], name="deployment_env_created"),
            # the reaper: active deployments by heartbeat
            models.Index(fields=["status", "heartbeat_at"], name="deployment_status_heartbeat"),
        ]
        constraints = [
            # the lock: at most one active deployment per environment (a guarded rollout takes its flag's instead)
            models.UniqueConstraint(
                fields=["environment"],
                condition=Q(status__in=["queued", "running", "rolling_back"], flag=""),
                name="deployment_one_active_per_environment",
            ),
            # a guarded rollout's lock: at most one active plan per flag and environment
            models.UniqueConstraint(
                fields=["environment", "flag"],
                condition=Q(status__in=["queued", "running", "rolling_back"]) & ~Q(flag=""),
                name="deployment_one_active_per_flag_environment",
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.environment.name} {self.version} ({self.status})"

    def get_absolute_url(self) -> str:
        return reverse("deployments:detail", args=[self.pk])

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE

    @property
    def dispatch_pending(self) -> bool:
        """Queued, and its run task could not be sent yet: the reaper sends it when the broker answers."""
        return self.status == DeploymentStatus.QUEUED and self.dispatched_at is None and bool(self.dispatch_error)


class Phase(models.TextChoices):
    FORWARD = "forward", "forward"
    ROLLBACK = "rollback", "rollback"


class StepStatus(models.TextChoices):
    RUNNING = "running", "running"
    SUCCEEDED = "succeeded", "succeeded"
    FAILED = "failed", "failed"
    SKIPPED = "skipped", "skipped"


class StepRun(models.Model):
    deployment = models.ForeignKey(Deployment, on_delete=models.CASCADE, related_name="step_runs")
    index = models.PositiveIntegerField()  # the step's place in the pipeline
    phase = models.CharField(max_length=10, choices=Phase.choices, default=Phase.FORWARD)
    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=20)
    status = models.CharField(max_length=10, choices=StepStatus.choices, default=StepStatus.RUNNING)
    started_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)
    exit_code = models.IntegerField(null=True, blank=True)
    pid = models.IntegerField(null=True, blank=True)  # a command's process group, for the reaper on this host
    output = models.TextField(blank=True)  # the tail, at most DEPLOY_STEP_OUTPUT_LIMIT bytes
    output_truncated = models.BooleanField(default=False)
    error = models.TextField(blank=True)
    # The backup gate refused the step before any of it ran: it failed, yet its own rollback has nothing to
    # undo. Stored, not kept in the runner's memory, so that the reaper's rollback skips it too.
    not_started = models.BooleanField(default=False)

    class Meta:
        ordering = ["started_at", "id"]
        constraints = [
            # a step runs once per phase of a deployment (a rollback that restarts skips what it did)
            models.UniqueConstraint(fields=["deployment", "phase", "index"], name="steprun_once_per_phase"),
        ]

    def __str__(self) -> str:
        return f"{self.phase} {self.index} {self.name} ({self.status})"

    @property
    def duration_ms(self) -> int | None:
        if self.finished_at is None:
            return None
        return int((self.finished_at - self.started_at).total_seconds() * 1000)


class LogLevel(models.TextChoices):
    INFO = "info", "info"
    WARNING = "warning", "warning"
    ERROR = "error", "error"


class LogLine(models.Model):
    """What happened, in order: the deployment's own audit trail, shown live on its page."""

    deployment = models.ForeignKey(Deployment, on_delete=models.CASCADE, related_name="log_lines")
    time = models.DateTimeField(default=timezone.now)
    level = models.CharField(max_length=10, choices=LogLevel.choices, default=LogLevel.INFO)
    step = models.CharField(max_length=100, blank=True)
    message = models.TextField()

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.time:%H:%M:%S} {self.level} {self.step} {self.message[:80]}"


class RecoveryPlan(models.Model):
    """What to do for one kind of failure: steps like a pipeline's, and the runbook a person follows.

    A plan that names a ``drill_target`` is drilled on its schedule (``backups`` runs the drills, reading
    the plan through ``controlplane.drills``): the target's latest verified backup is restored into a
    scratch database (a pgBackRest target's newest set, to the end of its archived WAL, into a scratch
    data directory), the smoke queries must each return a row there, and the time to that working
    database is the RTO the plan achieves. Drills never touch the plan's environment.
    """

    failure_type = models.SlugField(max_length=50, unique=True)
    environment = models.ForeignKey(Environment, on_delete=models.PROTECT, related_name="recovery_plans")
    steps = models.JSONField(default=list)
    runbook = models.TextField(blank=True)
    drill_target = models.ForeignKey(
        "backups.BackupTarget",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        help_text="Restore drills restore this target's latest verified backup into a scratch database (a "
        "pgBackRest target: its newest set, to the end of the archived WAL, into a scratch data directory); "
        "empty: the plan is not drilled.",
    )
    drill_interval_hours = models.PositiveIntegerField(
        "drill every (hours)",
        default=DEFAULT_DRILL_INTERVAL_HOURS,
        validators=[MaxValueValidator(24 * 365)],
        help_text="Schedule of the restore drills (168: weekly); 0: no scheduled drills.",
    )
    smoke_queries = models.JSONField(
        default=list,
        blank=True,
        help_text="SQL run read-only against the drill's scratch database; each must succeed and return a row.",
    )

    class Meta:
        ordering = ["failure_type"]

    def __str__(self) -> str:
        return self.failure_type

    def clean(self) -> None:
        problem = smoke_queries_problem(self.smoke_queries)
        if problem:
            raise ValidationError({"smoke_queries": problem})


MAX_SMOKE_QUERIES = 20


def smoke_queries_problem(queries: Any) -> str:
    """Why ``queries`` is not a list of smoke queries, or "": each one SQL statement, no longer than 2000."""
    if not isinstance(queries, list):
        return "a JSON list of SQL statements"
    if len(queries) > MAX_SMOKE_QUERIES:
        return f"at most {MAX_SMOKE_QUERIES} queries"
    for index, query in enumerate(queries):
        if not isinstance(query, str) or not query.strip():
            return f"query {index + 1}: a non-empty SQL string"
        if len(query) > 2000:
            return f"query {index + 1}: longer than 2000 characters"
        if ";" in query.strip().rstrip(";"):
            return f"query {index + 1}: one statement only (no ';' inside)"
    return ""


class Verdict(models.TextChoices):
    PASS = "pass", "pass"
    FAIL = "fail", "breached"
    INCONCLUSIVE = "inconclusive", "inconclusive"


class AnalysisMeasurement(models.Model):
    """One measurement of one condition of an ``analysis`` step (``deployments.analysis``): the value, the
    threshold it was judged against (the baseline's allowance when that is stricter) and the verdict."""

    step_run = models.ForeignKey(StepRun, on_delete=models.CASCADE, related_name="measurements")
    condition = models.PositiveIntegerField()  # the condition's place in the step's list
    label = models.CharField(max_length=200)  # what it measures, in words: "wingmanmatch-demo error_ratio"
    at = models.DateTimeField(default=timezone.now)
    value = models.FloatField(null=True, blank=True)  # None: nothing to judge (no traffic, no scrape)
    threshold = models.FloatField(null=True, blank=True)
    baseline = models.FloatField(null=True, blank=True)  # the previous release's figure, when compared
    requests = models.FloatField(null=True, blank=True)  # requests in the window, for traffic signals
    verdict = models.CharField(max_length=12, choices=Verdict.choices)
    detail = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["at", "id"]
        indexes = [
            # the deployment page: a step run's measurements, condition by condition, in time order
            models.Index(fields=["step_run", "condition", "at"], name="measurement_run_condition_at"),
        ]

    def __str__(self) -> str:
        return f"{self.label} {self.value} ({self.verdict})"
