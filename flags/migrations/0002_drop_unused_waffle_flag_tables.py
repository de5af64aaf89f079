"""Drop waffle's own flag tables, which waffle's first migration creates even when the flag model is
swapped (WAFFLE_FLAG_MODEL = "flags.Flag"). Unused, they hold foreign keys to auth_user and auth_group
that no model declares, so PostgreSQL refuses to TRUNCATE those tables (a test flush, a reset)."""

from django.db import migrations

UNUSED_TABLES = ["waffle_flag_users", "waffle_flag_groups", "waffle_flag"]


class Migration(migrations.Migration):
    dependencies = [
        ("flags", "0001_initial"),
        ("waffle", "0004_update_everyone_nullbooleanfield"),
    ]

    operations = [
        migrations.RunSQL(
            sql=[f"DROP TABLE IF EXISTS {table}" for table in UNUSED_TABLES],
            reverse_sql=migrations.RunSQL.noop,
        ),
    ]
