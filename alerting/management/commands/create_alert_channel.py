"""Add an alert channel from a shell (the production guide's first start): ``create_alert_channel ops-slack
--kind slack --url-env SLACK_WEBHOOK_URL``. The URL is read from a variable so it stays out of shell history.
"""

from __future__ import annotations

import os

from django.core.management.base import BaseCommand, CommandError, CommandParser

from alerting.models import ChannelKind, NotificationChannel
from alerting.services import InvalidAlertSetting, channel_create
from controlplane.audit import Actor


class Command(BaseCommand):
    help = "Create an alert channel (Slack, webhook or e-mail) unless one of that name exists; attach it to every rule."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")
        parser.add_argument("--kind", required=True, choices=ChannelKind.values)
        parser.add_argument("--url-env", metavar="VARIABLE", help="Environment variable holding the webhook URL.")
        parser.add_argument("--to", default="", help="E-mail recipients, comma-separated (kind email).")

    def handle(self, *args: object, **options: object) -> None:
        name = str(options["name"])
        if NotificationChannel.objects.filter(name=name).exists():
            self.stdout.write(f"alert channel {name!r} exists; left as it is")
            return
        data: dict[str, object] = {"name": name, "kind": options["kind"]}
        if options["url_env"]:
            url = os.environ.get(str(options["url_env"]))
            if not url:
                raise CommandError(f"environment variable {options['url_env']} is not set")
            data["url"] = url
        if options["to"]:
            data["email_recipients"] = [a.strip() for a in str(options["to"]).split(",") if a.strip()]
        actor = Actor.system("manage.py create_alert_channel")
        try:
            channel = channel_create(data=data, actor=actor)
        except InvalidAlertSetting as exc:
            raise CommandError(str(exc)) from None
        from alerting.models import AlertRule
        from alerting.services import rule_update

        for rule in AlertRule.objects.all():
            rule_update(rule=rule, changes={"channels": [*rule.channels.all(), channel]}, actor=actor)
        self.stdout.write(f"alert channel {name!r} ({channel.kind}) created and attached to every alert rule")
