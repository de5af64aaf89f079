"""A service with a scrape source and whole-service minutes, written directly (no scrape runs)."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.utils import timezone

from monitoring.models import MetricSource, Service, ServiceMinute, SourceKind

# Cumulative counts per bound: 100 requests, 50 under 0.1 s, 90 under 0.5 s, all under 2.5 s; p95 is
# 0.5 + (2.5 - 0.5) * (95 - 90) / (100 - 90) = 1.5 s.
FAST = {"0.1": 50, "0.5": 90, "2.5": 100, "+Inf": 100}
# 100 requests, 20 under 0.5 s, 60 under 2.5 s, 100 under 5 s: p95 is 2.5 + 2.5 * 35 / 40 = 4.6875 s.
SLOW = {"0.1": 0, "0.5": 20, "2.5": 60, "5.0": 100, "+Inf": 100}


def this_minute() -> datetime:
    return timezone.now().replace(second=0, microsecond=0)


def make_service(name: str = "wingmanmatch-backend", **source: object) -> Service:
    service = Service.objects.create(name=name, description=f"{name} for the tests")
    MetricSource.objects.create(service=service, kind=SourceKind.SCRAPE, urls="http://127.0.0.1:9/metrics", **source)
    return service


def add_minutes(
    service: Service,
    *,
    minutes: int = 5,
    requests: float | None = 100,
    errors: float = 0,
    buckets: dict[str, float] | None = None,
    scrapes: int = 4,
    failed: int = 0,
    end: datetime | None = None,
) -> None:
    """``minutes`` whole-service rows ending before ``end`` (this minute), each with these counts."""
    end = end or this_minute()
    for back in range(1, minutes + 1):
        ServiceMinute.objects.create(
            service=service,
            minute=end - timedelta(minutes=back),
            route="",
            requests=requests,
            errors=errors if requests is not None else None,
            buckets=(buckets or FAST) if requests is not None else {},
            scrapes=scrapes,
            failed=failed,
        )
