"""Create the shipped pipelines, the demo environment and the recovery plans where missing (make run)."""

from __future__ import annotations

from django.core.management.base import BaseCommand

from controlplane.audit import Actor
from deployments.defaults import ensure_defaults


class Command(BaseCommand):
    help = "Create the wingmanmatch and demo pipelines, the demo environment and the recovery plans if missing."

    def handle(self, *args: object, **options: object) -> None:
        ensure_defaults(actor=Actor.system("manage.py ensure_demo_environment"))
        self.stdout.write("deployments: pipelines wingmanmatch and demo, environment demo, recovery plans ready")
