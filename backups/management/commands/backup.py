"""Take a backup now, in this process: ``manage.py backup [TARGET]`` (every enabled target by default)."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError, CommandParser

from backups.copies import copies_upload
from backups.models import BackupStatus, BackupTarget, CopyStatus
from backups.services import AlreadyRunning, backup_create
from controlplane.audit import Actor


class Command(BaseCommand):
    help = "Back up a target now (all enabled targets when none is named); exits 1 when a backup fails."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "target", nargs="?", help="Target name (see admin, Backups); default: every enabled target."
        )

    def handle(self, *args: object, **options: object) -> None:
        name = options["target"]
        if name:
            targets = list(BackupTarget.objects.filter(name=name))
            if not targets:
                known = ", ".join(BackupTarget.objects.values_list("name", flat=True)) or "none"
                raise CommandError(f"no backup target named {name!r} (targets: {known})")
        else:
            targets = list(BackupTarget.objects.filter(enabled=True))
            if not targets:
                raise CommandError("no enabled backup target")
        failed = []
        for target in targets:
            try:
                backup = backup_create(target=target, actor=Actor.system("manage.py backup"))
            except AlreadyRunning as exc:
                failed.append(target.name)
                self.stderr.write(f"{target.name}: {exc}")
                continue
            if backup.status == BackupStatus.SUCCEEDED:
                self.stdout.write(
                    f"{target.name}: backup #{backup.pk} {backup.file} {backup.size_bytes} bytes "
                    f"sha256 {backup.sha256} in {backup.duration_ms} ms"
                    + (" (encrypted with age)" if backup.encrypted else "")
                )
                for copy in copies_upload(backup=backup, actor=Actor.system("manage.py backup")):
                    if copy.status == CopyStatus.VERIFIED:
                        self.stdout.write(
                            f"{target.name}: copied to {copy.storage}, read back {copy.size_bytes} bytes, same sha256"
                        )
                    else:  # the backup stands; the copy is tried again by the schedule
                        failed.append(f"{target.name} (copy to {copy.storage})")
                        self.stderr.write(f"{target.name}: copy to {copy.storage} failed: {copy.error}")
            else:
                failed.append(target.name)
                self.stderr.write(f"{target.name}: backup #{backup.pk} failed: {backup.error}")
        if failed:
            raise CommandError(f"backup failed for {', '.join(failed)}")
