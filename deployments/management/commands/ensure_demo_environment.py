"""Create the shipped pipelines, production's and the demo's deployments rows and the recovery plans where
missing (make run)."""

from __future__ import annotations

from django.core.management.base import BaseCommand

from controlplane.audit import Actor
from deployments.defaults import ensure_defaults


class Command(BaseCommand):
    help = (
        "Create the wingmanmatch and demo pipelines, production (wingmanmatch) and demo, and the recovery plans"
        " (on production) if missing."
    )

    def handle(self, *args: object, **options: object) -> None:
        ensure_defaults(actor=Actor.system("manage.py ensure_demo_environment"))
        self.stdout.write(
            "deployments: pipelines wingmanmatch and demo, environments production and demo, recovery plans ready"
        )
