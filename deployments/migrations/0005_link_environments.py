"""Link each deployments environment to the ground environment of the same name, making the ones the
ground's seed lacks (``demo``, say) after the seeded three, in name order."""

from django.db import migrations


def link_by_name(apps, schema_editor):
    ground_model = apps.get_model("controlplane", "Environment")
    target_model = apps.get_model("deployments", "Environment")
    last = ground_model.objects.order_by("-position").values_list("position", flat=True).first() or 0
    for target in target_model.objects.filter(environment__isnull=True).order_by("name"):
        ground = ground_model.objects.filter(name=target.name).first()
        if ground is None:
            last += 10
            ground = ground_model.objects.create(name=target.name, position=last)
        target.environment = ground
        target.save(update_fields=["environment"])


def unlink(apps, schema_editor):
    apps.get_model("deployments", "Environment").objects.update(environment=None)


class Migration(migrations.Migration):
    dependencies = [
        ("deployments", "0004_environment_ground"),
    ]

    operations = [
        migrations.RunPython(link_by_name, unlink),
    ]
