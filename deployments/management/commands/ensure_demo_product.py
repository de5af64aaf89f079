"""Register the demo product make run starts, and write its configuration (development only)."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError, CommandParser

from controlplane.audit import Actor
from deployments.demo_product import SERVICE, DemoRefusedInProduction, demo_product_ensure

# make run tells this exit status from a failure: the demo is left out, the control plane still starts.
REFUSED_IN_PRODUCTION = 3


class Command(BaseCommand):
    help = (
        f"Create the service {SERVICE} (scrape source, SLOs, job monitor, monitored endpoint) and a flags:read "
        "token for the demo product if missing, and write its configuration. Refused in production."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--port", type=int, required=True, help="The demo product's port on 127.0.0.1.")
        parser.add_argument(
            "--control-plane-url",
            required=True,
            help="Where the demo reaches the control plane (http://127.0.0.1:8000).",
        )

    def handle(self, *args: object, **options: object) -> None:
        port = options["port"]
        assert isinstance(port, int)
        if not 1 <= port <= 65535:
            raise CommandError(f"--port must be 1 to 65535, not {port}")
        try:
            registration = demo_product_ensure(
                port=port,
                control_plane_url=str(options["control_plane_url"]),
                actor=Actor.system("manage.py ensure_demo_product"),
            )
        except DemoRefusedInProduction as exc:
            raise CommandError(str(exc), returncode=REFUSED_IN_PRODUCTION) from None
        for line in registration.created:
            self.stdout.write(f"demo product: created {line}")
        self.stdout.write(
            f"demo product: service {SERVICE} scraped at {registration.metrics_url}; "
            f"its configuration is in {registration.config_file} (readable by you only)"
        )
