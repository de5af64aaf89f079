"""The alerting models, moved from the monitoring app: Django's state only.

The tables exist already (monitoring's 0003 made them, and its data migrations filled them) under the
names the models keep through ``db_table``; so this creates the models in alerting's state and touches
no table. Monitoring's 0009 removes them from its own state after this runs.
"""

import django.core.validators
import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
        # The tables, and the default rules in them, come from monitoring's migrations up to here.
        ("monitoring", "0008_celery_beat_silent_rule"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="AlertRule",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                            ),
                        ),
                        ("name", models.CharField(max_length=100, unique=True)),
                        (
                            "kind",
                            models.CharField(
                                choices=[
                                    ("check_status", "check failing N times running"),
                                    ("check_latency_ms", "check latency (ms)"),
                                    ("p95_latency_ms", "request p95 latency (ms)"),
                                    ("error_rate", "request error rate (%)"),
                                    ("backup_age_hours", "latest verified backup age (hours)"),
                                    ("backup_failed", "latest backup or verification of a target failed"),
                                ],
                                max_length=20,
                            ),
                        ),
                        (
                            "component",
                            models.CharField(
                                blank=True,
                                help_text='For check rules: the component, or "*" for every check.',
                                max_length=100,
                            ),
                        ),
                        (
                            "measurement",
                            models.CharField(
                                blank=True,
                                help_text="For check rules: the measurement; empty means every measurement.",
                                max_length=50,
                            ),
                        ),
                        (
                            "threshold",
                            models.FloatField(
                                help_text="ms for latency, % for error rate, hours for backup age, consecutive failures for check status."
                            ),
                        ),
                        (
                            "window_minutes",
                            models.PositiveIntegerField(
                                default=5,
                                help_text="For request metrics: the window the figure is computed over.",
                                validators=[
                                    django.core.validators.MinValueValidator(1),
                                    django.core.validators.MaxValueValidator(1440),
                                ],
                            ),
                        ),
                        (
                            "for_evaluations",
                            models.PositiveIntegerField(
                                default=1,
                                help_text="Consecutive evaluations the condition must hold before the alert fires.",
                                validators=[
                                    django.core.validators.MinValueValidator(1),
                                    django.core.validators.MaxValueValidator(100),
                                ],
                            ),
                        ),
                        (
                            "severity",
                            models.CharField(
                                choices=[("critical", "critical"), ("warning", "warning"), ("info", "info")],
                                default="warning",
                                max_length=10,
                            ),
                        ),
                        (
                            "repeat_interval_minutes",
                            models.PositiveIntegerField(
                                default=60,
                                help_text="Never notify twice for the same alert within this many minutes.",
                                validators=[
                                    django.core.validators.MinValueValidator(1),
                                    django.core.validators.MaxValueValidator(10080),
                                ],
                            ),
                        ),
                        ("enabled", models.BooleanField(default=True)),
                        ("description", models.CharField(blank=True, max_length=500)),
                    ],
                    options={
                        "db_table": "monitoring_alertrule",
                        "ordering": ["name"],
                    },
                ),
                migrations.CreateModel(
                    name="NotificationChannel",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                            ),
                        ),
                        ("name", models.CharField(max_length=100, unique=True)),
                        (
                            "kind",
                            models.CharField(
                                choices=[
                                    ("slack", "Slack (incoming webhook)"),
                                    ("email", "e-mail"),
                                    ("webhook", "webhook (JSON POST)"),
                                ],
                                max_length=10,
                            ),
                        ),
                        (
                            "url",
                            models.CharField(
                                blank=True,
                                help_text="http:// or https:// URL, for Slack and webhook channels.",
                                max_length=500,
                            ),
                        ),
                        (
                            "email_recipients",
                            models.JSONField(blank=True, default=list, help_text="Addresses, for e-mail channels."),
                        ),
                        ("enabled", models.BooleanField(default=True)),
                        ("created_at", models.DateTimeField(default=django.utils.timezone.now, editable=False)),
                    ],
                    options={
                        "db_table": "monitoring_notificationchannel",
                        "ordering": ["name"],
                    },
                ),
                migrations.CreateModel(
                    name="Alert",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                            ),
                        ),
                        ("dedup_key", models.CharField(max_length=250)),
                        ("component", models.CharField(blank=True, max_length=100)),
                        ("measurement", models.CharField(blank=True, max_length=50)),
                        (
                            "state",
                            models.CharField(
                                choices=[("pending", "pending"), ("firing", "firing"), ("resolved", "resolved")],
                                default="pending",
                                max_length=10,
                            ),
                        ),
                        ("started_at", models.DateTimeField(default=django.utils.timezone.now)),
                        ("fired_at", models.DateTimeField(blank=True, null=True)),
                        ("resolved_at", models.DateTimeField(blank=True, null=True)),
                        ("last_evaluated_at", models.DateTimeField(default=django.utils.timezone.now)),
                        ("last_value", models.FloatField(blank=True, null=True)),
                        (
                            "consecutive",
                            models.PositiveIntegerField(
                                default=0, help_text="Evaluations in a row the condition held."
                            ),
                        ),
                        ("acknowledged_at", models.DateTimeField(blank=True, null=True)),
                        (
                            "last_notified_at",
                            models.DateTimeField(
                                blank=True,
                                help_text="When a notification of this alert last went out (not a skipped one).",
                                null=True,
                            ),
                        ),
                        (
                            "acknowledged_by",
                            models.ForeignKey(
                                blank=True,
                                null=True,
                                on_delete=django.db.models.deletion.SET_NULL,
                                related_name="+",
                                to=settings.AUTH_USER_MODEL,
                            ),
                        ),
                        (
                            "rule",
                            models.ForeignKey(
                                on_delete=django.db.models.deletion.CASCADE,
                                related_name="alerts",
                                to="alerting.alertrule",
                            ),
                        ),
                    ],
                    options={
                        "db_table": "monitoring_alert",
                        "ordering": ["-started_at"],
                    },
                ),
                migrations.CreateModel(
                    name="Delivery",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                            ),
                        ),
                        (
                            "event",
                            models.CharField(
                                choices=[
                                    ("firing", "firing"),
                                    ("resolved", "resolved"),
                                    ("test", "test"),
                                    ("event", "event"),
                                ],
                                max_length=10,
                            ),
                        ),
                        (
                            "payload",
                            models.JSONField(
                                default=dict, help_text="The document sent (taken when the event happened)."
                            ),
                        ),
                        ("created_at", models.DateTimeField(default=django.utils.timezone.now)),
                        (
                            "status",
                            models.CharField(
                                choices=[
                                    ("pending", "pending"),
                                    ("sent", "sent"),
                                    ("failed", "failed"),
                                    ("skipped", "skipped"),
                                ],
                                default="pending",
                                max_length=10,
                            ),
                        ),
                        ("attempts", models.PositiveSmallIntegerField(default=0)),
                        ("last_attempt_at", models.DateTimeField(blank=True, null=True)),
                        ("sent_at", models.DateTimeField(blank=True, null=True)),
                        (
                            "last_error",
                            models.CharField(
                                blank=True, help_text="The last error, or why it was skipped.", max_length=500
                            ),
                        ),
                        ("response_status", models.PositiveSmallIntegerField(blank=True, null=True)),
                        (
                            "alert",
                            models.ForeignKey(
                                blank=True,
                                null=True,
                                on_delete=django.db.models.deletion.SET_NULL,
                                related_name="deliveries",
                                to="alerting.alert",
                            ),
                        ),
                        (
                            "channel",
                            models.ForeignKey(
                                on_delete=django.db.models.deletion.PROTECT,
                                related_name="deliveries",
                                to="alerting.notificationchannel",
                            ),
                        ),
                    ],
                    options={
                        "verbose_name_plural": "deliveries",
                        "db_table": "monitoring_delivery",
                        "ordering": ["-created_at"],
                    },
                ),
                migrations.AddField(
                    model_name="alertrule",
                    name="channels",
                    field=models.ManyToManyField(
                        blank=True,
                        db_table="monitoring_alertrule_channels",
                        related_name="rules",
                        to="alerting.notificationchannel",
                    ),
                ),
                migrations.CreateModel(
                    name="Silence",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                            ),
                        ),
                        ("starts_at", models.DateTimeField(default=django.utils.timezone.now)),
                        ("ends_at", models.DateTimeField()),
                        (
                            "component",
                            models.CharField(blank=True, help_text="Empty: every component.", max_length=100),
                        ),
                        ("reason", models.CharField(max_length=500)),
                        ("created_at", models.DateTimeField(default=django.utils.timezone.now, editable=False)),
                        (
                            "created_by",
                            models.ForeignKey(
                                blank=True,
                                null=True,
                                on_delete=django.db.models.deletion.SET_NULL,
                                related_name="+",
                                to=settings.AUTH_USER_MODEL,
                            ),
                        ),
                        (
                            "rule",
                            models.ForeignKey(
                                blank=True,
                                null=True,
                                on_delete=django.db.models.deletion.CASCADE,
                                related_name="silences",
                                to="alerting.alertrule",
                            ),
                        ),
                    ],
                    options={
                        "db_table": "monitoring_silence",
                        "ordering": ["-starts_at"],
                    },
                ),
                migrations.AddIndex(
                    model_name="alert",
                    index=models.Index(fields=["dedup_key", "-last_notified_at"], name="alert_key_notified"),
                ),
                migrations.AddIndex(
                    model_name="alert",
                    index=models.Index(fields=["state", "-started_at"], name="alert_state_started"),
                ),
                migrations.AddConstraint(
                    model_name="alert",
                    constraint=models.UniqueConstraint(
                        condition=models.Q(("state", "resolved"), _negated=True),
                        fields=("dedup_key",),
                        name="alert_one_open_per_dedup_key",
                    ),
                ),
                migrations.AddIndex(
                    model_name="delivery",
                    index=models.Index(fields=["-created_at"], name="delivery_created"),
                ),
                migrations.AddIndex(
                    model_name="delivery",
                    index=models.Index(fields=["status", "-created_at"], name="delivery_status_created"),
                ),
                migrations.AddIndex(
                    model_name="silence",
                    index=models.Index(fields=["ends_at"], name="silence_ends_at"),
                ),
            ],
            database_operations=[],
        ),
    ]
