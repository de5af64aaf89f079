"""Deployments' environments become the ground's: each row gets a one-to-one link to
``controlplane.Environment`` (added nullable here, filled by 0005, required by 0006: three migrations so
that PostgreSQL never alters a table with the data migration's updates pending in the same transaction)."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("controlplane", "0002_environments"),
        ("deployments", "0003_deployment_dispatch"),
    ]

    operations = [
        migrations.AddField(
            model_name="environment",
            name="environment",
            field=models.OneToOneField(
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="deployment_target",
                to="controlplane.environment",
            ),
        ),
    ]
