"""Print pass/warn/fail per production-readiness item; exit non-zero on any fail."""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandParser

from controlplane.readiness import FAIL, overall, readiness_items


class Command(BaseCommand):
    help = "Check whether this configuration is ready for production."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true", help="Print JSON for machines.")

    def handle(self, *args: object, **options: object) -> None:
        items = readiness_items()
        status = overall(items)
        if options["json"]:
            self.stdout.write(json.dumps({"status": status, "items": [i.as_dict() for i in items]}, indent=2))
        else:
            style = {"pass": self.style.SUCCESS, "warn": self.style.WARNING, "fail": self.style.ERROR}
            for item in items:
                line = f"{item.status.upper():4}  {item.name:14} {item.message}"
                if item.hint and item.status != "pass":
                    line += f"  -> {item.hint}"
                self.stdout.write(style[item.status](line))
            self.stdout.write(f"overall: {status}")
        if status == FAIL:
            raise SystemExit(1)
