"""The alerting models now belong to the alerting app (its 0001): removed from monitoring's state only.

Their tables stay as they are, with their rows; alerting's models keep the table names.
"""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("monitoring", "0008_celery_beat_silent_rule"),
        # Alerting's state has the models before monitoring's lets them go.
        ("alerting", "0001_initial"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.RemoveField(
                    model_name="delivery",
                    name="alert",
                ),
                migrations.RemoveField(
                    model_name="alertrule",
                    name="channels",
                ),
                migrations.RemoveField(
                    model_name="silence",
                    name="rule",
                ),
                migrations.RemoveField(
                    model_name="delivery",
                    name="channel",
                ),
                migrations.RemoveField(
                    model_name="silence",
                    name="created_by",
                ),
                migrations.DeleteModel(
                    name="Alert",
                ),
                migrations.DeleteModel(
                    name="AlertRule",
                ),
                migrations.DeleteModel(
                    name="Delivery",
                ),
                migrations.DeleteModel(
                    name="NotificationChannel",
                ),
                migrations.DeleteModel(
                    name="Silence",
                ),
            ],
            database_operations=[],
        ),
    ]
