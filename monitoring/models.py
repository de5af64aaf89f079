from __future__ import annotations

from django.core.validators import MaxValueValidator, MinValueValidator, URLValidator
from django.db import models
from django.utils import timezone


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
