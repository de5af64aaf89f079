"""Scrape services' sources now, whatever their interval: manage.py scrape_once [service] [--rounds 2]."""

from __future__ import annotations

import time

from django.core.management.base import BaseCommand, CommandError, CommandParser

from monitoring.scrape import RoundResult, scrape_sources, scrape_sources_run


def describe(result: RoundResult) -> str:
    answered = result.replicas - result.failed
    line = f"{result.service}: {answered} of {result.replicas} replica(s) answered"
    counted = result.rollup.service
    if counted is None:
        if answered:
            line += "; first round (or first after a failure): counters kept, the next round counts"
    else:
        seconds = (result.rollup.end - result.rollup.start).total_seconds()
        rate = f", {counted.requests / seconds:.2f} req/s" if seconds > 0 else ""
        p95 = counted.p95
        line += (
            f"; {counted.requests:g} request(s), {counted.errors:g} error(s) in {seconds:g} s{rate}"
            f" over {len(result.rollup.routes or {})} route(s)"
            + (f", p95 {p95 * 1000:.0f} ms" if p95 is not None else "")
        )
    if result.error:
        line += f"\n  {result.error}"
    return line


class Command(BaseCommand):
    help = "Scrape the enabled scrape sources (of one service, when named) now and print what each gave."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("service", nargs="?", help="a service's name (default: every enabled service)")
        parser.add_argument("--rounds", type=int, default=1, help="rounds to run (2 or more show rates)")
        parser.add_argument("--wait", type=float, default=5.0, help="seconds between rounds")

    def handle(self, *args: object, **options: object) -> None:
        from flags.selectors import PERFORMANCE_MONITORING, is_on

        service = options["service"]
        rounds = int(options["rounds"])  # type: ignore[call-overload]
        if rounds < 1:
            raise CommandError("--rounds must be at least 1.")
        if not is_on(PERFORMANCE_MONITORING, default=True):
            self.stderr.write(f"The {PERFORMANCE_MONITORING} flag is off: beat does not scrape; scraping anyway.")
        for number in range(rounds):
            if number:
                time.sleep(float(options["wait"]))  # type: ignore[arg-type]
            sources = list(scrape_sources(service=service if isinstance(service, str) else None))
            if not sources:
                raise CommandError(
                    f"No enabled scrape source of an enabled service named {service}."
                    if service
                    else "No enabled scrape source of an enabled service."
                )
            for result in scrape_sources_run(sources):
                self.stdout.write(describe(result))
