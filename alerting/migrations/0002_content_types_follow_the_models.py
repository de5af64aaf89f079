"""The content types of the moved models become alerting's, so what points at them keeps pointing.

Django names a model's content type, and through it its permissions (``change_alert``...), by app
label. Left as they were, ``monitoring.*`` would go stale and the migrate command would make new
``alerting.*`` ones: the operators' and groups' permissions and the admin's change history would stay
with the stale ones. Renaming the rows keeps their ids, so every permission granted and every admin log
entry follows the model. The audit trail names an object by its model label (``object_type``, which
an object's history is read by): those labels move too; what each event says happened is unchanged.

A fresh database has none of these rows yet (content types are made after migrate): nothing to do.
"""

from django.db import migrations

MODELS = ("alert", "alertrule", "delivery", "notificationchannel", "silence")


def _move(apps, source: str, target: str) -> None:
    ContentType = apps.get_model("contenttypes", "ContentType")
    AuditEvent = apps.get_model("controlplane", "AuditEvent")
    for model in MODELS:
        old = ContentType.objects.filter(app_label=source, model=model).first()
        if old is not None:
            # Made by a post_migrate run between the two steps, it holds nothing granted yet; the old
            # row holds the permissions operators were given, and takes the name.
            ContentType.objects.filter(app_label=target, model=model).delete()
            old.app_label = target
            old.save(update_fields=["app_label"])
        AuditEvent.objects.filter(object_type=f"{source}.{model}").update(object_type=f"{target}.{model}")
    ContentType.objects.clear_cache()


def to_alerting(apps, schema_editor):
    _move(apps, "monitoring", "alerting")


def to_monitoring(apps, schema_editor):
    _move(apps, "alerting", "monitoring")


class Migration(migrations.Migration):
    dependencies = [
        ("alerting", "0001_initial"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("controlplane", "0001_initial"),
    ]

    operations = [migrations.RunPython(to_alerting, to_monitoring)]
