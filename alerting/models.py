"""Alerting: where notifications go, the rules that raise alerts, the alerts, silences and the delivery log.

Every write goes through ``alerting/services.py``. The tables keep the names they had when these models
lived in the monitoring app (``db_table``): the move changed Django's state, not the database.
"""

from __future__ import annotations

import hashlib
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, validate_email
from django.db import models
from django.db.models import Q
from django.utils import timezone

from controlplane.models import Environment
from controlplane.runbooks import recovery_plan_problem, recovery_plan_url

ANY_COMPONENT = "*"


def mask_url(url: str) -> str:
    """A webhook URL with its secret part hidden: scheme and host stay, path and query do not.

    A short fingerprint of the whole URL shows, in audit diffs, that it changed without showing it.
    """
    if not url:
        return ""
    parts = urlsplit(url)
    fingerprint = hashlib.sha256(url.encode()).hexdigest()[:8]
    return f"{parts.scheme}://{parts.hostname or ''}/… (sha256 {fingerprint})"


class ChannelKind(models.TextChoices):
    SLACK = "slack", "Slack (incoming webhook)"
    EMAIL = "email", "e-mail"
    WEBHOOK = "webhook", "webhook (JSON POST)"


class NotificationChannel(models.Model):
    """Where notifications go. A Slack webhook URL is a secret: shown masked, never in audit diffs."""

    name = models.CharField(max_length=100, unique=True)
    kind = models.CharField(max_length=10, choices=ChannelKind.choices)
    url = models.CharField(
        max_length=500, blank=True, help_text="http:// or https:// URL, for Slack and webhook channels."
    )
    email_recipients = models.JSONField(default=list, blank=True, help_text="Addresses, for e-mail channels.")
    enabled = models.BooleanField(default=True)
    flag_change_environments = models.JSONField(
        default=list,
        blank=True,
        help_text="The environments whose flag changes this channel is told of (flag, before -> after, who).",
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        db_table = "monitoring_notificationchannel"
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def save(self, *args: object, **kwargs: object) -> None:
        # The services validate first; this keeps any other path from storing a non-http(s) URL.
        self.clean()
        super().save(*args, **kwargs)  # type: ignore[arg-type]

    def clean(self) -> None:
        errors: dict[str, str] = {}
        envs = self.flag_change_environments
        if not isinstance(envs, list) or not all(isinstance(name, str) for name in envs):
            errors["flag_change_environments"] = "a list of environment names"
        else:
            unknown = sorted(set(envs) - set(Environment.objects.values_list("name", flat=True)))
            if unknown:
                errors["flag_change_environments"] = f"no environment named {', '.join(unknown)}"
        if self.kind in (ChannelKind.SLACK, ChannelKind.WEBHOOK):
            problem = url_problem(self.url)
            if problem:
                errors["url"] = problem
        elif self.kind == ChannelKind.EMAIL:
            recipients = self.email_recipients
            if not isinstance(recipients, list) or not recipients:
                errors["email_recipients"] = "an e-mail channel needs at least one recipient"
            else:
                for address in recipients:
                    try:
                        if not isinstance(address, str):
                            raise ValidationError("not text")
                        validate_email(address)
                    except ValidationError:
                        errors["email_recipients"] = f"{address!r} is not an e-mail address"
                        break
        elif self.kind not in ChannelKind.values:
            errors["kind"] = f"must be one of {', '.join(ChannelKind.values)}"
        if errors:
            raise ValidationError(errors)

    @property
    def masked_url(self) -> str:
        return mask_url(self.url)

    @property
    def target(self) -> str:
        """What an operator may see of the destination."""
        if self.kind == ChannelKind.EMAIL:
            return ", ".join(self.email_recipients or [])
        return self.masked_url


def url_problem(url: str) -> str | None:
    """Why ``url`` cannot be a webhook address, or None. Only http and https are accepted."""
    if not url:
        return "a URL is required for Slack and webhook channels"
    if len(url) > 500:
        return "at most 500 characters"
    try:
        parts = urlsplit(url)
    except ValueError:
        return "not a valid URL"
    if parts.scheme not in ("http", "https"):
        return "only http:// and https:// URLs are accepted"
    if not parts.hostname:
        return "the URL has no host"
    if any(ch.isspace() for ch in url):
        return "the URL contains spaces"
    return None


class RuleKind(models.TextChoices):
    CHECK_STATUS = "check_status", "check failing N times running"
    CHECK_LATENCY_MS = "check_latency_ms", "check latency (ms)"
    P95_LATENCY_MS = "p95_latency_ms", "request p95 latency (ms)"
    ERROR_RATE = "error_rate", "request error rate (%)"
    BACKUP_AGE_HOURS = "backup_age_hours", "latest verified backup age (hours)"
    BACKUP_FAILED = "backup_failed", "latest backup or verification of a target failed"
    DRILL_FAILED = "drill_failed", "latest restore drill of a recovery plan failed"
    JOB_DOWN = "job_down", "a job monitor is down (its ping is overdue or its job failed)"
    SERVICE_P95 = "service_p95", "service p95 latency (s)"
    SERVICE_ERROR_RATIO = "service_error_ratio", "service error ratio (%)"
    SERVICE_UP = "service_up", "service up (share of successful scrapes) at or below"
    SLO_BURN = "slo_burn", "an SLO's error budget burning fast (the SRE workbook's burn-rate alerts)"


CHECK_KINDS = (RuleKind.CHECK_STATUS, RuleKind.CHECK_LATENCY_MS)
REQUEST_KINDS = (RuleKind.P95_LATENCY_MS, RuleKind.ERROR_RATE)
SERVICE_KINDS = (RuleKind.SERVICE_P95, RuleKind.SERVICE_ERROR_RATIO, RuleKind.SERVICE_UP)
# The latency and error rules, which the performance_alerts flag turns off together.
PERFORMANCE_KINDS = (*REQUEST_KINDS, RuleKind.SERVICE_P95, RuleKind.SERVICE_ERROR_RATIO)
UNITS: dict[str, str] = {
    RuleKind.CHECK_STATUS: "failures running",
    RuleKind.CHECK_LATENCY_MS: "ms",
    RuleKind.P95_LATENCY_MS: "ms",
    RuleKind.ERROR_RATE: "%",
    RuleKind.BACKUP_AGE_HOURS: "h",
    RuleKind.BACKUP_FAILED: "targets failing",
    RuleKind.DRILL_FAILED: "plans failing",
    RuleKind.JOB_DOWN: "monitors down",
    RuleKind.SERVICE_P95: "s",
    RuleKind.SERVICE_ERROR_RATIO: "%",
    RuleKind.SERVICE_UP: "up",
    RuleKind.SLO_BURN: "x the workbook's burn rate",
}
# An slo_burn rule's severity picks which of the workbook's alerts it raises: a critical rule pages (14.4x
# over 1 h and 5 min, 6x over 6 h and 30 min), any other makes a ticket (1x over 3 days and 6 h).
SLO_PAGE_SEVERITIES = ("critical",)


class Severity(models.TextChoices):
    CRITICAL = "critical", "critical"
    WARNING = "warning", "warning"
    INFO = "info", "info"


class AlertRule(models.Model):
    """A condition on the stored monitoring data; an alert fires when it holds ``for_evaluations`` times.

    ``threshold`` means, per kind: check_status - how many of the latest stored results of the check
    must all be ``fail`` (a whole number); check_latency_ms and p95_latency_ms - milliseconds;
    error_rate - percent of requests answered 5xx; backup_age_hours - hours; backup_failed - 0 (one alert
    per target whose latest backup or verification failed); drill_failed - 0 (one alert per drilled recovery
    plan whose latest restore drill failed); job_down - 0 (one alert per job monitor that is
    down: its ping is overdue past the grace time, or its job reported a failure); service_p95 - seconds,
    service_error_ratio - percent of the service's requests that failed, service_up - a share of successful
    scrapes from 0 to below 1, held when up is at or below it (all three over ``window_minutes`` of the
    service named in ``service``; ``alerting.service_rules``); slo_burn - a multiple of
    the SRE workbook's burn-rate factors, 1 for the workbook's alerts (one alert per SLO with alerting on,
    of ``service`` or of every service: its value is how far the faster-burning of the severity's window
    pairs is past its factor, the smaller of the two windows' burn rates over the factor; a critical rule
    raises the page alerts, any other the ticket ones). The condition holds when
    the value is above the threshold (check_status: when it reaches it).
    ``component`` "*" means every check (one alert per component and measurement); an empty
    ``measurement`` means every measurement of the component.
    """

    name = models.CharField(max_length=100, unique=True)
    kind = models.CharField(max_length=20, choices=RuleKind.choices)
    component = models.CharField(
        max_length=100, blank=True, help_text='For check rules: the component, or "*" for every check.'
    )
    measurement = models.CharField(
        max_length=50, blank=True, help_text="For check rules: the measurement; empty means every measurement."
    )
    # A name, not a foreign key: alerting reads monitoring only through monitoring.selectors.
    service = models.CharField(
        max_length=100, blank=True, help_text="For service rules: the service's name (Monitoring > Services)."
    )
    threshold = models.FloatField(
        help_text=(
            "ms for latency, % for error rate, hours for backup age, consecutive failures for check status; "
            "for a service: seconds for its p95, % for its error ratio, 0 to 1 for its up."
        )
    )
    window_minutes = models.PositiveIntegerField(
        default=5,
        validators=[MinValueValidator(1), MaxValueValidator(1440)],
        help_text="For request metrics: the window the figure is computed over.",
    )
    for_evaluations = models.PositiveIntegerField(
        default=1,
        validators=[MinValueValidator(1), MaxValueValidator(100)],
        help_text="Consecutive evaluations the condition must hold before the alert fires.",
    )
    severity = models.CharField(max_length=10, choices=Severity.choices, default=Severity.WARNING)
    repeat_interval_minutes = models.PositiveIntegerField(
        default=60,
        validators=[MinValueValidator(1), MaxValueValidator(10080)],
        help_text="Never notify twice for the same alert within this many minutes.",
    )
    enabled = models.BooleanField(default=True)
    channels = models.ManyToManyField(
        NotificationChannel, blank=True, related_name="rules", db_table="monitoring_alertrule_channels"
    )
    description = models.CharField(max_length=500, blank=True)
    # A failure type, not a foreign key: alerting does not import deployments (controlplane.runbooks).
    recovery_plan = models.CharField(
        max_length=50,
        blank=True,
        help_text="The recovery plan (Deployments > Recovery plans, by failure type) its alerts offer to run.",
    )
    recovery_auto = models.BooleanField(
        default=False,
        help_text="Run the recovery plan by itself, once each time an alert of this rule starts firing.",
    )

    class Meta:
        db_table = "monitoring_alertrule"
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        errors: dict[str, str] = {}
        if self.kind not in RuleKind.values:
            errors["kind"] = f"must be one of {', '.join(RuleKind.values)}"
        if self.kind in CHECK_KINDS and not self.component:
            errors["component"] = 'a check rule needs a component ("*" for every check)'
        if self.kind == RuleKind.CHECK_LATENCY_MS and not self.measurement:
            # Other measurements of a check are counts, ages, percents: only a latency is compared in ms.
            errors["measurement"] = 'a latency rule needs the measurement that holds it (checks store "responseTime")'
        if self.kind not in CHECK_KINDS and (self.component or self.measurement):
            errors["component"] = "only check rules take a component and measurement"
        threshold = self.threshold
        if threshold is None:
            errors["threshold"] = "is required"
        elif self.kind == RuleKind.CHECK_STATUS and (threshold != int(threshold) or not 1 <= threshold <= 100):
            errors["threshold"] = "for check status: a whole number of consecutive failures from 1 to 100"
        elif self.kind == RuleKind.ERROR_RATE and not 0 <= threshold < 100:
            errors["threshold"] = "for error rate: a percent from 0 to below 100"
        elif threshold < 0:
            errors["threshold"] = "must not be negative"
        if self.severity not in Severity.values:
            errors["severity"] = f"must be one of {', '.join(Severity.values)}"
        if self.service and self.kind not in (*SERVICE_KINDS, RuleKind.SLO_BURN):
            errors["service"] = "only service and SLO rules take a service"
        from alerting.service_rules import service_problems  # it asks monitoring.selectors for the names

        for name, problem in service_problems(self).items():
            errors.setdefault(name, problem)
        if self.recovery_plan:
            unknown = recovery_plan_problem(self.recovery_plan)
            if unknown:
                errors["recovery_plan"] = unknown
        elif self.recovery_auto:
            errors["recovery_auto"] = "runs the rule's recovery plan by itself: name the plan first"
        if errors:
            raise ValidationError(errors)

    @property
    def unit(self) -> str:
        return UNITS.get(self.kind, "")

    @property
    def condition(self) -> str:
        """The rule in words, for notifications and admin."""
        if self.kind == RuleKind.CHECK_STATUS:
            target = "any check" if self.component == ANY_COMPONENT else self.component
            if self.measurement:
                target += f":{self.measurement}"
            return f"{target} failing {int(self.threshold)} times running"
        if self.kind == RuleKind.CHECK_LATENCY_MS:
            target = "any check" if self.component == ANY_COMPONENT else self.component
            return f"{target} latency over {self.threshold:g} ms"
        if self.kind == RuleKind.P95_LATENCY_MS:
            return f"p95 latency over {self.threshold:g} ms for {self.window_minutes} min"
        if self.kind == RuleKind.ERROR_RATE:
            return f"error rate over {self.threshold:g} % for {self.window_minutes} min"
        if self.kind == RuleKind.BACKUP_FAILED:
            return "the latest backup or verification of a target failed"
        if self.kind == RuleKind.DRILL_FAILED:
            return "the latest restore drill of a recovery plan failed"
        if self.kind == RuleKind.JOB_DOWN:
            return "a job monitor is down (its ping is overdue or its job failed)"
        if self.kind == RuleKind.SERVICE_P95:
            return f"{self.service} p95 latency over {self.threshold:g} s for {self.window_minutes} min"
        if self.kind == RuleKind.SERVICE_ERROR_RATIO:
            return f"{self.service} error ratio over {self.threshold:g} % for {self.window_minutes} min"
        if self.kind == RuleKind.SERVICE_UP:
            return f"{self.service} up at or below {self.threshold:g} over {self.window_minutes} min"
        if self.kind == RuleKind.SLO_BURN:
            which = "page" if self.severity in SLO_PAGE_SEVERITIES else "ticket"
            times = "" if self.threshold == 1 else f" ({self.threshold:g} times their factors)"
            return f"an SLO's error budget burning at the workbook's {which} rates{times}"
        return f"latest verified backup older than {self.threshold:g} h"


class AlertState(models.TextChoices):
    PENDING = "pending", "pending"
    FIRING = "firing", "firing"
    RESOLVED = "resolved", "resolved"


class AlertQuerySet(models.QuerySet):
    def open(self) -> AlertQuerySet:
        return self.exclude(state=AlertState.RESOLVED)


class Alert(models.Model):
    """One occurrence of a rule's condition for one target (``dedup_key``), from pending to resolved."""

    rule = models.ForeignKey(AlertRule, on_delete=models.CASCADE, related_name="alerts")
    dedup_key = models.CharField(max_length=250)
    component = models.CharField(max_length=100, blank=True)
    measurement = models.CharField(max_length=50, blank=True)
    state = models.CharField(max_length=10, choices=AlertState.choices, default=AlertState.PENDING)
    started_at = models.DateTimeField(default=timezone.now)
    fired_at = models.DateTimeField(null=True, blank=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    last_evaluated_at = models.DateTimeField(default=timezone.now)
    last_value = models.FloatField(null=True, blank=True)
    consecutive = models.PositiveIntegerField(default=0, help_text="Evaluations in a row the condition held.")
    acknowledged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    last_notified_at = models.DateTimeField(
        null=True, blank=True, help_text="When a notification of this alert last went out (not a skipped one)."
    )
    # When its rule's recovery plan was started for it (auto): at most once per firing alert.
    recovery_started_at = models.DateTimeField(null=True, blank=True)

    objects = AlertQuerySet.as_manager()

    class Meta:
        db_table = "monitoring_alert"
        ordering = ["-started_at"]
        constraints = [
            # At most one open (pending or firing) alert per key, whatever evaluations run at once.
            models.UniqueConstraint(
                fields=["dedup_key"], condition=~Q(state="resolved"), name="alert_one_open_per_dedup_key"
            ),
        ]
        indexes = [
            # The cooldown: the last notification of any alert with this key.
            models.Index(fields=["dedup_key", "-last_notified_at"], name="alert_key_notified"),
            # The admin list and the dashboard: newest alerts first, by state.
            models.Index(fields=["state", "-started_at"], name="alert_state_started"),
        ]

    def __str__(self) -> str:
        target = f" {self.component}:{self.measurement}" if self.component else ""
        return f"{self.rule.name}{target} ({self.state})"

    @property
    def recovery_url(self) -> str:
        """The page that runs its rule's recovery plan for it (a dry run, then a confirmation); "" for none."""
        return recovery_plan_url(self.rule.recovery_plan, self.pk) if self.rule.recovery_plan else ""


class Silence(models.Model):
    """A maintenance window: matching alerts still change state and are recorded, but nothing is sent.

    No rule and no component: every alert is silenced during the window.
    """

    starts_at = models.DateTimeField(default=timezone.now)
    ends_at = models.DateTimeField()
    rule = models.ForeignKey(AlertRule, null=True, blank=True, on_delete=models.CASCADE, related_name="silences")
    component = models.CharField(max_length=100, blank=True, help_text="Empty: every component.")
    reason = models.CharField(max_length=500)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    # What holds the silence and ends it ("deployment:42" for a pipeline's own silences); empty: an operator's.
    # Found by the ends_at index: the open ones are few.
    owner = models.CharField(max_length=100, blank=True, editable=False)

    class Meta:
        db_table = "monitoring_silence"
        ordering = ["-starts_at"]
        indexes = [
            # Silences active now: ends_at > now (few rows; the starts_at test runs on those).
            models.Index(fields=["ends_at"], name="silence_ends_at"),
        ]

    def __str__(self) -> str:
        scope = self.rule.name if self.rule is not None else "every rule"
        if self.component:
            scope += f" / {self.component}"
        return f"{scope}: {self.starts_at:%Y-%m-%d %H:%M} to {self.ends_at:%Y-%m-%d %H:%M}"

    def clean(self) -> None:
        # A field the form refused is still None here, which the stubs' datetime does not allow for.
        if self.starts_at is not None and self.ends_at is not None and self.ends_at <= self.starts_at:  # type: ignore[redundant-expr]
            raise ValidationError({"ends_at": "must be after the start"})


class DeliveryEvent(models.TextChoices):
    FIRING = "firing", "firing"
    RESOLVED = "resolved", "resolved"
    TEST = "test", "test"
    EVENT = "event", "event"  # something happened that operators hear of (a deployment started, ended)


class DeliveryStatus(models.TextChoices):
    PENDING = "pending", "pending"
    SENT = "sent", "sent"
    FAILED = "failed", "failed"
    SKIPPED = "skipped", "skipped"  # silenced, or external_alerts off: recorded, not sent


class Delivery(models.Model):
    """One notification to one channel, and what became of it: the delivery log."""

    alert = models.ForeignKey(Alert, null=True, blank=True, on_delete=models.SET_NULL, related_name="deliveries")
    channel = models.ForeignKey(NotificationChannel, on_delete=models.PROTECT, related_name="deliveries")
    event = models.CharField(max_length=10, choices=DeliveryEvent.choices)
    payload = models.JSONField(default=dict, help_text="The document sent (taken when the event happened).")
    created_at = models.DateTimeField(default=timezone.now)
    status = models.CharField(max_length=10, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True, help_text="The last error, or why it was skipped.")
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)

    class Meta:
        db_table = "monitoring_delivery"
        ordering = ["-created_at"]
        verbose_name_plural = "deliveries"
        indexes = [
            # The delivery log, newest first, and its status filter.
            models.Index(fields=["-created_at"], name="delivery_created"),
            models.Index(fields=["status", "-created_at"], name="delivery_status_created"),
        ]

    def __str__(self) -> str:
        return f"{self.event} to {self.channel} ({self.status})"
