"""Deploy from a terminal: ``manage.py deploy ENV --version V [--wait]`` (the worker runs it)."""

from __future__ import annotations

import time

from django.core.management.base import BaseCommand, CommandError, CommandParser

from controlplane.audit import Actor
from controlplane.errors import ControlPlaneError
from deployments.models import FINISHED, Deployment, DeploymentStatus
from deployments.services import (
    deployment_request,
    pending_detail,
    rollback_to_previous,
)


class Command(BaseCommand):
    help = "Queue a deployment; with --wait, stream its log and exit 1 unless it succeeded."

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: object) -> CommandParser:
        # Django's own --version (its version number) gives way to the version being deployed.
        return super().create_parser(prog_name, subcommand, conflict_handler="resolve", **kwargs)

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("environment")
        which = parser.add_mutually_exclusive_group(required=True)
        which.add_argument("--version", help="The version to deploy.")
        which.add_argument("--rollback", action="store_true", help="Deploy the previous release again.")
        parser.add_argument("--wait", action="store_true", help="Stream the log until the deployment ends.")
        parser.add_argument("--timeout", type=float, default=3600, help="Seconds --wait waits at most.")

    def handle(self, *args: object, **options: object) -> None:
        actor = Actor.system("manage.py deploy")
        try:
            if options["rollback"]:
                deployment = rollback_to_previous(environment=options["environment"], actor=actor)
            else:
                deployment = deployment_request(
                    environment=options["environment"], version=options["version"], actor=actor
                )
        except ControlPlaneError as exc:  # bad input, locked, nothing to roll back to
            raise CommandError(str(exc)) from None
        self.stdout.write(
            f"deployment #{deployment.pk}: {deployment.type} {deployment.version} to {options['environment']}"
        )
        if deployment.dispatch_pending:
            # Still exit 0: the deployment is saved, holds the lock and will run, as the API's 202 says;
            # a failing exit would invite a retry, which can only be refused (locked) or deploy twice.
            self.stderr.write(
                f"warning: deployment #{deployment.pk} is queued but not sent to a worker yet "
                f"({deployment.dispatch_error}): {pending_detail()}"
            )
        if not options["wait"]:
            return
        status = self._stream(deployment, float(options["timeout"]))  # type: ignore[arg-type]
        if status != DeploymentStatus.SUCCEEDED:
            raise CommandError(f"deployment #{deployment.pk} ended {status}")

    def _stream(self, deployment: Deployment, timeout: float) -> str:
        last = 0
        deadline = time.monotonic() + timeout
        while True:
            for line in deployment.log_lines.filter(id__gt=last).order_by("id"):
                last = line.pk
                step = f" [{line.step}]" if line.step else ""
                self.stdout.write(f"{line.time:%H:%M:%S} {line.level:<7}{step} {line.message}")
            status = Deployment.objects.values_list("status", flat=True).get(pk=deployment.pk)
            if status in FINISHED and not deployment.log_lines.filter(id__gt=last).exists():
                return status
            if time.monotonic() > deadline:
                raise CommandError(f"deployment #{deployment.pk} still {status} after {timeout:g} s (it goes on)")
            time.sleep(0.3)
