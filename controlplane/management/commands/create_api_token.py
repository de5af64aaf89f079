"""Make an API token and print it alone on stdout, once: TOKEN=$(manage.py create_api_token ci --scopes ...)."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError, CommandParser

from controlplane.audit import Actor
from controlplane.models import Scope
from controlplane.services import InvalidTokenRequest, api_token_create


class Command(BaseCommand):
    help = "Create an API token with the given scopes and print it once."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="What the token is for, e.g. ci or wingmanmatch-backend.")
        parser.add_argument("--scopes", required=True, help=f"Comma-separated: {','.join(Scope.values)}")
        parser.add_argument("--expires-in-days", type=int, default=None, help="Days until it expires (1-3650).")

    def handle(self, *args: object, **options: object) -> None:
        try:
            token, raw = api_token_create(
                name=str(options["name"]),
                scopes=str(options["scopes"]),
                expires_in_days=options["expires_in_days"],  # type: ignore[arg-type]
                actor=Actor.system("manage.py create_api_token"),
            )
        except InvalidTokenRequest as error:
            raise CommandError(str(error)) from None
        self.stderr.write(f"Token '{token.name}' ({token.prefix}…) with scopes {', '.join(token.scopes)}; shown once:")
        self.stdout.write(raw)
