"""Point the shipped p95 and error-rate rules at a service: ``shipped_rules_follow_service
wingmanmatch-backend``. Creating the first service does it by itself; this chooses another."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError, CommandParser

from alerting.services import InvalidAlertSetting, shipped_rules_follow_service
from controlplane.audit import Actor


class Command(BaseCommand):
    help = (
        "Point the shipped rules 'p95 latency over 2000 ms' and 'error rate over 1 %' at a service of the "
        "product (those still watching the control plane's own requests)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("service", help="The service's name (Monitoring > Services).")

    def handle(self, *args: object, **options: object) -> None:
        service = str(options["service"])
        try:
            moved = shipped_rules_follow_service(
                service=service, actor=Actor.system("manage.py shipped_rules_follow_service")
            )
        except InvalidAlertSetting as exc:
            raise CommandError(f"{exc.field}: {exc.message}") from None
        if not moved:
            self.stdout.write("no shipped rule still watches the control plane's requests; nothing changed")
        for rule in moved:
            self.stdout.write(f"{rule.name}: now {rule.condition}")
