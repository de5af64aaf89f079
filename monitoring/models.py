from __future__ import annotations

import uuid
from datetime import timedelta

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, URLValidator
from django.db import models
from django.utils import timezone

from monitoring.jobs import InvalidSchedule, Schedule, validate_cron, zone_of


class Heartbeat(models.Model):
    """The last time a periodic ``heartbeat`` task ran: beat scheduled it and a worker ran it.

    The health checks read it as a dead-man's switch for beat and the workers.
    """

    name = models.CharField(max_length=50, unique=True)
    last_seen = models.DateTimeField()
    hostname = models.CharField(max_length=255, blank=True)

    def __str__(self) -> str:
        return f"{self.name} at {self.last_seen:%Y-%m-%d %H:%M:%S}"


class Status(models.TextChoices):
    PASS = "pass", "pass"
    WARN = "warn", "warn"
    FAIL = "fail", "fail"


class HealthMetric(models.Model):
    """One measurement of one check: written by the scheduled checks, one row per measurement."""

    time = models.DateTimeField(default=timezone.now)
    component = models.CharField(max_length=100)
    measurement = models.CharField(max_length=50)
    component_type = models.CharField(max_length=30, blank=True)
    value = models.FloatField(null=True, blank=True)
    unit = models.CharField(max_length=20, blank=True)
    status = models.CharField(max_length=4, choices=Status.choices)
    output = models.CharField(max_length=500, blank=True)

    class Meta:
        indexes = [
            # Latest row per component, and one component over a time range.
            models.Index(fields=["component", "measurement", "-time"], name="healthmetric_component_time"),
            # Retention deletes everything older than a cutoff, in batches.
            models.Index(fields=["time"], name="healthmetric_time"),
        ]

    def __str__(self) -> str:
        return f"{self.component}:{self.measurement} {self.status} at {self.time:%Y-%m-%d %H:%M}"


# Upper bounds (ms) of the request-latency histogram buckets; the last bucket is everything above.
LATENCY_BUCKETS_MS = (5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)
BUCKET_FIELDS = tuple(f"le_{bound}" for bound in LATENCY_BUCKETS_MS) + ("le_inf",)


class RequestRollup(models.Model):
    """Requests of one minute for one view, method and status class, summed over every process."""

    minute = models.DateTimeField()
    view = models.CharField(max_length=200)
    method = models.CharField(max_length=10)
    status_class = models.CharField(max_length=3)  # "2xx" ... "5xx"
    count = models.PositiveIntegerField(default=0)
    errors = models.PositiveIntegerField(default=0)  # 5xx responses
    duration_ms_sum = models.FloatField(default=0)
    db_ms_sum = models.FloatField(default=0)
    slow_queries = models.PositiveIntegerField(default=0)
    le_5 = models.PositiveIntegerField(default=0)
    le_10 = models.PositiveIntegerField(default=0)
    le_25 = models.PositiveIntegerField(default=0)
    le_50 = models.PositiveIntegerField(default=0)
    le_100 = models.PositiveIntegerField(default=0)
    le_250 = models.PositiveIntegerField(default=0)
    le_500 = models.PositiveIntegerField(default=0)
    le_1000 = models.PositiveIntegerField(default=0)
    le_2500 = models.PositiveIntegerField(default=0)
    le_5000 = models.PositiveIntegerField(default=0)
    le_10000 = models.PositiveIntegerField(default=0)
    le_inf = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["minute", "view", "method", "status_class"], name="requestrollup_unique"),
        ]
        indexes = [
            # Every view over a time range (the 5 min / 1 h / 24 h figures), and retention.
            models.Index(fields=["minute"], name="requestrollup_minute"),
        ]

    def __str__(self) -> str:
        return f"{self.minute:%Y-%m-%d %H:%M} {self.method} {self.view} {self.status_class}: {self.count}"


class MonitoredEndpoint(models.Model):
    """An HTTP endpoint of the product checked like an uptime monitor (the product's API, frontend)."""

    name = models.SlugField(max_length=50, unique=True, help_text="Component name in health reports.")
    url = models.URLField(max_length=500, validators=[URLValidator(schemes=["http", "https"])])
    expected_status = models.PositiveSmallIntegerField(
        default=200, validators=[MinValueValidator(100), MaxValueValidator(599)]
    )
    timeout_ms = models.PositiveIntegerField(
        default=5000,
        validators=[MinValueValidator(100), MaxValueValidator(60000)],
        help_text=(
            "How long to wait for the answer. The scheduled check run (metrics and alerts) waits this long, "
            "up to 45 s; the health API answers within HEALTH_DEADLINE whatever this says."
        ),
    )
    body_contains = models.CharField(max_length=200, blank=True, help_text="Text the body must contain.")
    enabled = models.BooleanField(default=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class JobState(models.TextChoices):
    NEW = "new", "new"
    UP = "up", "up"
    LATE = "late", "late"
    DOWN = "down", "down"
    PAUSED = "paused", "paused"


class ScheduleKind(models.TextChoices):
    PERIOD = "period", "every N seconds"
    CRON = "cron", "cron expression"


class JobMonitor(models.Model):
    """One of the product's scheduled jobs, which pings its secret URL (``/ping/<ping_key>``) when it runs.

    The ping key is the credential: whoever holds the URL can report for the job, and nothing else.
    """

    name = models.SlugField(max_length=100, unique=True)
    ping_key = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    schedule_kind = models.CharField(max_length=6, choices=ScheduleKind.choices, default=ScheduleKind.PERIOD)
    period_seconds = models.PositiveIntegerField(
        default=86400,
        validators=[MinValueValidator(60), MaxValueValidator(365 * 86400)],
        help_text="For a period schedule: the seconds expected between two pings.",
    )
    cron = models.CharField(
        max_length=100, blank=True, help_text='For a cron schedule: five fields, e.g. "30 2 * * *".'
    )
    tz = models.CharField(
        "time zone", max_length=64, default="UTC", help_text="The zone the cron expression is read in."
    )
    grace_seconds = models.PositiveIntegerField(
        default=3600,
        validators=[MinValueValidator(60), MaxValueValidator(30 * 86400)],
        help_text="How long past the expected time the monitor is late before it is down.",
    )
    state = models.CharField(max_length=6, choices=JobState.choices, default=JobState.NEW)
    created = models.DateTimeField(default=timezone.now)
    # The last ping that ended a run (success or failure): the schedule counts from it.
    last_ping = models.DateTimeField(null=True, blank=True)
    last_start = models.DateTimeField(null=True, blank=True)
    last_ping_kind = models.CharField(max_length=7, blank=True)
    last_exit_status = models.PositiveSmallIntegerField(null=True, blank=True)
    last_duration = models.DurationField(null=True, blank=True, help_text="From the start ping to the success ping.")
    last_output = models.TextField(blank=True)
    state_changed = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name"]
        indexes = [
            # Beat's minute pass reads the monitors that can turn late or down.
            models.Index(fields=["state"], name="jobmonitor_state"),
        ]

    def __str__(self) -> str:
        return self.name

    def ping_path(self) -> str:
        return f"/ping/{self.ping_key}"

    def schedule(self) -> Schedule:
        if self.schedule_kind == ScheduleKind.CRON:
            return Schedule(cron=self.cron, tz=self.tz, grace=timedelta(seconds=self.grace_seconds))
        return Schedule(period=timedelta(seconds=self.period_seconds), grace=timedelta(seconds=self.grace_seconds))

    def clean(self) -> None:
        errors: dict[str, str] = {}
        if self.schedule_kind == ScheduleKind.CRON:
            try:
                validate_cron(self.cron)
            except InvalidSchedule as exc:
                errors["cron"] = str(exc)
            try:
                zone_of(self.tz)
            except InvalidSchedule as exc:
                errors["tz"] = str(exc)
        if errors:
            raise ValidationError(errors)
