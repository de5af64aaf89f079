"""Print every flag in the import format: python manage.py export_flags > flags.json."""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand

from flags.services import flags_export


class Command(BaseCommand):
    help = "Print all flags as JSON, in the format import_flags reads."

    def handle(self, *args: object, **options: object) -> None:
        self.stdout.write(json.dumps(flags_export(), indent=2, sort_keys=False))
