"""Stored request rollups of a service, as the scrape worker leaves them, for the SLO tests.

``Traffic`` adds steady traffic over spans of time (requests a minute, a share of errors, a share of slow
requests) and ``save`` writes what the worker would have written by ``now``: a ``ServiceMinute`` per minute
of the last hours (the short windows read those) and a ``ServiceHour`` per complete hour (the long ones).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from monitoring.models import MetricSource, Service, ServiceHour, ServiceLevelObjective, ServiceMinute, SourceKind
from monitoring.service_signals import encode_buckets

# A fixed moment half past an hour, so windows have partial hours at their edges as in real life.
NOW = datetime(2026, 3, 10, 12, 30, tzinfo=UTC)
MINUTE, HOUR, DAY = timedelta(minutes=1), timedelta(hours=1), timedelta(days=1)
BOUNDS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, math.inf)
FAST, SLOW = 0.04, 1.0  # seconds: a fast request, and a slow one (at the 1 s bound)
MINUTES_KEPT = timedelta(hours=8)  # older minutes are only needed as hours


def make_service(name: str = "wingmanmatch-backend", kind: str = SourceKind.SCRAPE) -> Service:
    service = Service.objects.create(name=name)
    urls = "http://127.0.0.1:9/metrics" if kind == SourceKind.SCRAPE else "http://127.0.0.1:9"
    MetricSource.objects.create(service=service, kind=kind, urls=urls)
    return service


def make_slo(service: Service, name: str = "availability", **fields: object) -> ServiceLevelObjective:
    values: dict[str, object] = {"kind": "availability", "target_percent": 99.9, "window_days": 30, **fields}
    return ServiceLevelObjective.objects.create(service=service, name=name, **values)


@dataclass
class _Minute:
    requests: float = 0.0
    errors: float = 0.0
    buckets: dict[float, float] = field(default_factory=lambda: dict.fromkeys(BOUNDS, 0.0))


@dataclass
class Traffic:
    per_minute: dict[datetime, _Minute] = field(default_factory=dict)

    def add(
        self,
        start: datetime,
        end: datetime,
        *,
        rpm: float = 1000,
        errors: float = 0.0,
        slow: float = 0.0,
    ) -> Traffic:
        """``rpm`` requests each minute of [start, end), ``errors`` and ``slow`` (SLOW s) as shares of them."""
        minute = start
        while minute < end:
            row = self.per_minute.setdefault(minute, _Minute())
            row.requests += rpm
            row.errors += rpm * errors
            for bound in BOUNDS:
                row.buckets[bound] += rpm * (1 - slow) * (FAST <= bound) + rpm * slow * (SLOW <= bound)
            minute += MINUTE
        return self

    def quiet(self, start: datetime, end: datetime) -> Traffic:
        """Scrapes that succeeded and counted no request."""
        minute = start
        while minute < end:
            self.per_minute.setdefault(minute, _Minute())
            minute += MINUTE
        return self

    def save(self, service: Service, now: datetime = NOW) -> None:
        current_hour = now.replace(minute=0, second=0, microsecond=0)
        hours: dict[datetime, _Minute] = {}
        minutes = []
        for minute, row in sorted(self.per_minute.items()):
            if minute >= now:
                continue
            if minute >= now - MINUTES_KEPT:
                minutes.append(
                    ServiceMinute(
                        service=service,
                        minute=minute,
                        requests=row.requests,
                        errors=row.errors,
                        buckets=encode_buckets(row.buckets),
                        scrapes=4,
                    )
                )
            hour = minute.replace(minute=0)
            if hour < current_hour:
                total = hours.setdefault(hour, _Minute())
                total.requests += row.requests
                total.errors += row.errors
                for bound, count in row.buckets.items():
                    total.buckets[bound] += count
        ServiceMinute.objects.bulk_create(minutes)
        ServiceHour.objects.bulk_create(
            ServiceHour(
                service=service,
                hour=hour,
                requests=row.requests,
                errors=row.errors,
                buckets=encode_buckets(row.buckets),
                scrapes=240,
            )
            for hour, row in hours.items()
        )
