"""Make an API token and print it alone on stdout, once: TOKEN=$(manage.py create_api_token ci --scopes ...)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from django.core.management.base import BaseCommand, CommandError, CommandParser

from controlplane.audit import Actor
from controlplane.models import Scope
from controlplane.services import MAX_EXPIRES_IN_DAYS, MIN_EXPIRES_IN_DAYS, InvalidTokenRequest, api_token_create


@contextmanager
def _logs_on_stderr() -> Iterator[None]:
    """Log lines (a cache that is down, say) go to stderr while the command runs: stdout is the token."""
    loggers = [
        logging.getLogger(),
        *(v for v in logging.root.manager.loggerDict.values() if isinstance(v, logging.Logger)),
    ]
    moved = [
        handler
        for logger in loggers
        for handler in logger.handlers
        if isinstance(handler, logging.StreamHandler) and handler.stream is sys.stdout
    ]
    for handler in moved:
        handler.setStream(sys.stderr)
    try:
        yield
    finally:
        for handler in moved:
            handler.setStream(sys.stdout)


class Command(BaseCommand):
    help = "Create an API token with the given scopes and print it once."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="What the token is for, e.g. ci or wingmanmatch-backend.")
        parser.add_argument("--scopes", required=True, help=f"Comma-separated: {','.join(Scope.values)}")
        parser.add_argument(
            "--expires-in-days",
            type=int,
            default=None,
            help=f"Days until it expires ({MIN_EXPIRES_IN_DAYS}-{MAX_EXPIRES_IN_DAYS}).",
        )
        parser.add_argument(
            "--environment",
            default=None,
            help="For a flags:read token: the environment whose flags it reads (default: production).",
        )

    def handle(self, *args: object, **options: object) -> None:
        with _logs_on_stderr():
            self._create(options)

    def _create(self, options: dict[str, object]) -> None:
        try:
            token, raw = api_token_create(
                name=str(options["name"]),
                scopes=str(options["scopes"]),
                expires_in_days=options["expires_in_days"],  # type: ignore[arg-type]
                environment=options["environment"],  # type: ignore[arg-type]
                actor=Actor.system("manage.py create_api_token"),
            )
        except InvalidTokenRequest as error:
            raise CommandError(str(error)) from None
        bound = f" in {token.environment.name}" if token.environment is not None else ""
        self.stderr.write(
            f"Token '{token.name}' ({token.prefix}…) with scopes {', '.join(token.scopes)}{bound}; shown once:"
        )
        self.stdout.write(raw)
