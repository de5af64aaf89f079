"""Verify a backup now: ``manage.py verify_backup BACKUP_ID`` or ``manage.py verify_backup --latest TARGET``."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from backups.engines import BackupError
from backups.models import Backup, BackupTarget, VerificationResult
from backups.services import AlreadyRunning, backup_verify
from controlplane.audit import Actor


class Command(BaseCommand):
    help = "Restore a backup into a scratch database and check it; exits 1 naming the failed check."

    def add_arguments(self, parser: CommandParser) -> None:
        which = parser.add_mutually_exclusive_group(required=True)
        which.add_argument("backup_id", nargs="?", type=int, help="The backup's id (see the Backups page).")
        which.add_argument("--latest", metavar="TARGET", help="Verify the newest finished backup of TARGET.")
        parser.add_argument(
            "--from-storage",
            metavar="STORAGE",
            default="",
            help="Restore the backup's copy in STORAGE (e.g. offsite: the disaster case) instead of the local one.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["latest"]:
            name = options["latest"]
            if not BackupTarget.objects.filter(name=name).exists():
                known = ", ".join(BackupTarget.objects.order_by("name").values_list("name", flat=True)) or "none"
                raise CommandError(f"no such target {name!r} (targets: {known})")
            backup = Backup.objects.succeeded().filter(target__name=name).order_by("-started_at").first()
            if backup is None:
                raise CommandError(f"target {name!r} has no finished backup")
        else:
            backup = Backup.objects.select_related("target").filter(pk=options["backup_id"]).first()
            if backup is None:
                raise CommandError(f"no backup #{options['backup_id']}")
        try:
            verification = backup_verify(
                backup=backup, actor=Actor.system("manage.py verify_backup"), storage=options["from_storage"]
            )
        except (AlreadyRunning, BackupError) as exc:
            raise CommandError(str(exc)) from None
        for check in verification.checks:
            self.stdout.write(f"{check['status']:>4}  {check['name']:<10} {check['ms']:>7} ms  {check['detail']}")
        if verification.status != VerificationResult.PASSED:
            raise CommandError(
                f"backup #{backup.pk} failed verification at {verification.failed_check}: {verification.error}"
            )
        self.stdout.write(
            f"backup #{backup.pk} of {backup.target.name} verified"
            + (f" from its copy in {verification.storage}" if verification.storage else "")
            + f": restore {verification.restore_ms} ms, "
            f"total {verification.duration_ms} ms; scratch database dropped"
        )
