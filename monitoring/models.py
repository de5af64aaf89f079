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


class Service(models.Model):
    """A service of the product (say ``wingmanmatch-backend``) whose golden signals the control plane reads."""

    name = models.SlugField(max_length=100, unique=True)
    description = models.CharField(max_length=200, blank=True)
    enabled = models.BooleanField(default=True, help_text="A disabled service is neither scraped nor alerted on.")
    created = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class SourceKind(models.TextChoices):
    SCRAPE = "scrape", "scrape its /metrics"
    PROMETHEUS = "prometheus", "query a Prometheus-compatible server"


class MetricSource(models.Model):
    """Where a service's signals come from: its replicas' /metrics (scrape) or a Prometheus server's API.

    For ``scrape``, ``urls`` holds one /metrics URL per replica, one per line; for ``prometheus``, the
    server's base URL (``http://prometheus:9090``) on one line. The mapping fields are blank to recognise
    prometheus-fastapi-instrumentator's, OpenTelemetry's and django-prometheus' names without configuration.
    """

    service = models.ForeignKey(Service, on_delete=models.CASCADE, related_name="sources")
    kind = models.CharField(max_length=10, choices=SourceKind.choices, default=SourceKind.SCRAPE)
    urls = models.TextField(help_text="scrape: one /metrics URL per replica, one per line. prometheus: the base URL.")
    bearer_token_env = models.CharField(
        max_length=100,
        blank=True,
        help_text="The name of an environment variable holding a bearer token (the token itself is never stored).",
    )
    interval_seconds = models.PositiveIntegerField(
        default=15, validators=[MinValueValidator(5), MaxValueValidator(3600)]
    )
    timeout_seconds = models.FloatField(default=5.0, validators=[MinValueValidator(0.1), MaxValueValidator(60)])
    enabled = models.BooleanField(default=True)
    # Mapping for names nobody recognises without configuration (blank: recognise).
    histogram_metric = models.CharField(max_length=200, blank=True, help_text="Latency histogram family.")
    requests_metric = models.CharField(
        max_length=200,
        blank=True,
        help_text="Request counter family with a status label (blank: the histogram's _count).",
    )
    route_label = models.CharField(max_length=100, blank=True)
    status_label = models.CharField(max_length=100, blank=True)
    error_statuses = models.CharField(
        max_length=200, blank=True, help_text='Statuses that are errors, comma-separated ("5xx", "429").'
    )
    # prometheus: a label matcher selecting the service's series, and PromQL per signal (blank: the default).
    selector = models.CharField(
        max_length=300, blank=True, help_text='prometheus: label matchers for the service, e.g. job="backend".'
    )
    queries = models.JSONField(
        default=dict, blank=True, help_text="prometheus: PromQL per signal name overriding the defaults."
    )
    # State the worker keeps.
    state = models.JSONField(default=dict, blank=True, editable=False)
    last_attempt = models.DateTimeField(null=True, blank=True, editable=False)
    last_success = models.DateTimeField(null=True, blank=True, editable=False)
    last_error = models.TextField(blank=True, editable=False)
    up = models.BooleanField(null=True, editable=False)

    class Meta:
        ordering = ["service__name", "id"]

    def __str__(self) -> str:
        return f"{self.service.name} ({self.kind})"

    def url_list(self) -> list[str]:
        return [line.strip() for line in self.urls.splitlines() if line.strip()]

    def clean(self) -> None:
        urls = self.url_list()
        validate = URLValidator(schemes=["http", "https"])
        errors: dict[str, str] = {}
        if not urls:
            errors["urls"] = "Give at least one URL."
        for url in urls:
            try:
                validate(url)
            except ValidationError:
                errors["urls"] = f"Not an http(s) URL: {url[:100]}"
                break
        if self.kind == SourceKind.PROMETHEUS and len(urls) > 1:
            errors["urls"] = "A Prometheus source has one base URL."
        if self.timeout_seconds and self.interval_seconds and self.timeout_seconds > self.interval_seconds:
            errors["timeout_seconds"] = "The timeout cannot be longer than the interval."
        if self.histogram_metric and not (self.route_label and self.status_label):
            errors["route_label"] = "A mapped histogram needs its route and status labels."
        if errors:
            raise ValidationError(errors)


class ServiceMinute(models.Model):
    """What a service's replicas counted in one minute, for one route or (route "") the whole service.

    ``requests`` is None for a minute with no successful pair of scrapes: a gap, not a quiet minute.
    ``buckets`` maps a histogram bound (as text, "+Inf" last) to the count at or under it. On the
    whole-service row (route ""): ``seconds`` is the time the counted increases span (each round's, from
    the previous scrape to its own), what a request rate divides by; ``scrapes`` and ``failed`` count the
    replica scrapes of the minute (a round of two replicas counts two), from which ``up`` comes.
    """

    service = models.ForeignKey(Service, on_delete=models.CASCADE, related_name="minutes")
    minute = models.DateTimeField()
    route = models.CharField(max_length=200, blank=True)
    requests = models.FloatField(null=True)
    errors = models.FloatField(null=True)
    buckets = models.JSONField(default=dict)
    seconds = models.FloatField(default=0)
    scrapes = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["service", "minute", "route"], name="serviceminute_unique"),
        ]
        indexes = [
            models.Index(fields=["minute"], name="serviceminute_minute"),
        ]

    def __str__(self) -> str:
        return f"{self.service_id} {self.minute:%Y-%m-%d %H:%M} {self.route or '*'}: {self.requests}"


class ServiceHour(models.Model):
    """The whole service's minutes summed per hour: what 7- and 30-day uptime and 28-day SLOs read."""

    service = models.ForeignKey(Service, on_delete=models.CASCADE, related_name="hours")
    hour = models.DateTimeField()
    requests = models.FloatField(default=0)
    errors = models.FloatField(default=0)
    buckets = models.JSONField(default=dict)
    seconds = models.FloatField(default=0)
    scrapes = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["service", "hour"], name="servicehour_unique"),
        ]
        indexes = [
            models.Index(fields=["hour"], name="servicehour_hour"),
        ]

    def __str__(self) -> str:
        return f"{self.service_id} {self.hour:%Y-%m-%d %H}: {self.requests}"


class SignalSample(models.Model):
    """A value a Prometheus source evaluated for a service's signal (what it stores instead of rollups)."""

    service = models.ForeignKey(Service, on_delete=models.CASCADE, related_name="samples")
    at = models.DateTimeField()
    signal = models.CharField(max_length=20)
    value = models.FloatField(null=True)

    class Meta:
        indexes = [
            models.Index(fields=["service", "signal", "at"], name="signalsample_series"),
            models.Index(fields=["at"], name="signalsample_at"),
        ]

    def __str__(self) -> str:
        return f"{self.service_id} {self.signal} at {self.at:%Y-%m-%d %H:%M:%S}: {self.value}"


class ObjectiveKind(models.TextChoices):
    AVAILABILITY = "availability", "availability (requests that did not fail)"
    LATENCY = "latency", "latency (requests served under a threshold)"


class ServiceLevelObjective(models.Model):
    """An SLO of a service: a target share of good requests over a rolling window."""

    service = models.ForeignKey(Service, on_delete=models.CASCADE, related_name="objectives")
    name = models.SlugField(max_length=100)
    kind = models.CharField(max_length=12, choices=ObjectiveKind.choices, default=ObjectiveKind.AVAILABILITY)
    target_percent = models.FloatField(
        default=99.9,
        validators=[MinValueValidator(50), MaxValueValidator(99.999)],
        help_text="Share of good requests aimed at, in percent (99.9).",
    )
    threshold_ms = models.PositiveIntegerField(
        null=True, blank=True, help_text="latency: a request is good when served within this many milliseconds."
    )
    window_days = models.PositiveSmallIntegerField(default=28, validators=[MinValueValidator(1), MaxValueValidator(90)])
    alerting = models.BooleanField(default=True, help_text="Page and ticket on burn rates (the SRE workbook's).")

    class Meta:
        ordering = ["service__name", "name"]
        constraints = [
            models.UniqueConstraint(fields=["service", "name"], name="slo_unique_name"),
        ]

    def __str__(self) -> str:
        return f"{self.service.name}/{self.name}"

    def clean(self) -> None:
        if self.kind == ObjectiveKind.LATENCY and not self.threshold_ms:
            raise ValidationError({"threshold_ms": "A latency objective needs its threshold."})
