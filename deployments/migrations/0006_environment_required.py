import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("deployments", "0005_link_environments"),
    ]

    operations = [
        migrations.AlterField(
            model_name="environment",
            name="environment",
            field=models.OneToOneField(
                on_delete=django.db.models.deletion.PROTECT,
                related_name="deployment_target",
                to="controlplane.environment",
            ),
        ),
    ]
