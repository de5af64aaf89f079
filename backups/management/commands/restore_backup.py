"""Restore a backup into a database: ``manage.py restore_backup BACKUP_ID --into DATABASE_URL``."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from backups.engines import BackupError
from backups.models import Backup
from backups.services import backup_restore
from controlplane.audit import Actor


class Command(BaseCommand):
    help = (
        "Restore a backup into the database at --into, replacing what it holds. The checksum is verified "
        "first; the backed-up database itself is refused unless --i-know-this-overwrites is given."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("backup_id", type=int)
        parser.add_argument("--into", required=True, metavar="DATABASE_URL", help="postgres://... or sqlite:///...")
        parser.add_argument(
            "--i-know-this-overwrites",
            action="store_true",
            dest="overwrite_source",
            help="Allow --into to be the backed-up database itself.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        backup = Backup.objects.select_related("target").filter(pk=options["backup_id"]).first()
        if backup is None:
            raise CommandError(f"no backup #{options['backup_id']}")
        try:
            ms = backup_restore(
                backup=backup,
                into_url=str(options["into"]),
                overwrite_source=bool(options["overwrite_source"]),
                actor=Actor.system("manage.py restore_backup"),
            )
        except BackupError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"backup #{backup.pk} of {backup.target.name} restored in {ms} ms")
