"""Apply a flag file all or nothing: python manage.py import_flags FILE [--dry-run]."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from controlplane.audit import Actor
from flags.models import Flag
from flags.services import EnvironmentNotFound, InvalidFlagDefinition, flags_import


class Command(BaseCommand):
    help = (
        'Create or update flags from a JSON file: ours {"segments": [...], "flags": [...]} (today\'s one-line '
        "entries mean production; entries with environments name theirs), or Unleash's features document "
        "(/api/client/features or an export), whose states go to --environment. Flags not in the file are "
        "left alone."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", help="Path of the JSON file, or - for standard input.")
        parser.add_argument("--dry-run", action="store_true", help="Print what would change; change nothing.")
        parser.add_argument("--if-empty", action="store_true", help="Do nothing when any flag exists (first start).")
        parser.add_argument(
            "--environment", default=None, help="For Unleash's document: the environment it describes (production)."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["if_empty"] and Flag.objects.exists():
            self.stdout.write("flags exist; nothing imported")
            return
        path = str(options["file"])
        try:
            text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise CommandError(f"{path}: {exc.strerror}") from None
        try:
            document = json.loads(text)
        except ValueError as exc:
            raise CommandError(f"{path}: not valid JSON: {exc}") from None
        try:
            plan = flags_import(
                document=document,
                actor=Actor.system("manage.py import_flags"),
                dry_run=bool(options["dry_run"]),
                environment=options["environment"],
            )
        except (InvalidFlagDefinition, EnvironmentNotFound) as error:
            raise CommandError(f"{path}: {error}") from None
        for change in plan:
            if change.kind != "unchanged" or options["verbosity"] > 1:
                self.stdout.write(change.describe())
        counts = {kind: sum(1 for c in plan if c.kind == kind) for kind in ("create", "update", "unchanged")}
        prefix = "would apply" if options["dry_run"] else "applied"
        self.stdout.write(
            f"{prefix}: {counts['create']} created, {counts['update']} updated, {counts['unchanged']} unchanged"
        )
