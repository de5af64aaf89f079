"""The ``scrape`` metric source's worker: read each replica's /metrics, roll up, store per minute.

One round of a source:

1. Every replica's URL is fetched at once (threads), each with the source's timeout, so one hung
   replica costs only its timeout. The text is read with ``monitoring.rollup.read_scrape`` for the
   families the source's MetricMap needs: the map in the source's fields when set, else the known map
   recognised on the first scrape (read with the families of every known map once) and remembered in
   ``source.state``.
2. The increases since the previous round (kept in ``source.state``: each replica's cumulative counters
   per route) come from ``monitoring.rollup.rollup``, which handles counter resets and sums replicas.
3. They are added to the minute's ``ServiceMinute`` rows (route "" for the whole service, one row per
   route) and to the hour's ``ServiceHour`` (the whole service), at the minute the round ended in.

How failures count. ``scrapes`` and ``failed`` on the whole-service minute count replica scrapes: a
round of a two-replica source adds 2 to ``scrapes`` and, if one replica failed, 1 to ``failed``, so the
``up`` signal is the share of replica scrapes that succeeded (what Prometheus' ``avg(up)`` gives for the
``prometheus`` source). A failed replica contributes nothing to the increases of its round and of the
next one (it has no pair of scrapes): the requests it served then are a gap, never a zero. A round in
which no replica has a pair leaves the minute's ``requests`` None unless another round of that minute
had one. The source itself is ``up`` only when every replica answered; ``last_error`` names the ones
that did not, in words. The bearer token is read from its environment variable at each round and is
never logged, stored or shown: an error message that quotes it has it replaced.

A previous round older than three intervals (a worker that stopped for a while) is not paired with:
its increases would land in one minute as a burst.
"""

from __future__ import annotations

import http.client
import logging
import math
import os
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from controlplane.outbound import opener
from controlplane.redaction import redact_url
from monitoring.exposition import ExpositionError, read_families
from monitoring.models import MetricSource, ServiceHour, ServiceMinute, SourceKind
from monitoring.rollup import (
    KNOWN_MAPS,
    Counters,
    MetricMap,
    ReplicaScrape,
    Rollup,
    recognise,
    rollup,
    route_counters,
)
from monitoring.service_signals import decode_buckets, encode_buckets

logger = logging.getLogger(__name__)

# Beat sends the task this often; a source is due when its interval has passed since its last attempt,
# less half a tick, so that a 15 s source is scraped every 15 s and not every 20 s.
TICK_SECONDS = 5.0
STALE_INTERVALS = 3
MAX_BODY_BYTES = 32 * 1024 * 1024
MAX_ROUTES = 500  # per round: an exporter labelling routes by raw path must not flood the table
MAX_THREADS = 32
ACCEPT = "text/plain;version=0.0.4;q=1,*/*;q=0.1"  # never OpenMetrics, which this reader does not take
ROUTE_LENGTH = ServiceMinute._meta.get_field("route").max_length or 200
STATE_VERSION = 1
ALL_KNOWN_FAMILIES = frozenset().union(*(known.families for known in KNOWN_MAPS))


class ScrapeFailed(Exception):
    """One replica's scrape failed; the message says why in words."""


@dataclass(frozen=True)
class Fetched:
    """One replica's answer: its counters per route, or the reason it failed."""

    replica: str
    routes: dict[str, Counters] | None
    metric_map: MetricMap | None = None
    error: str = ""


@dataclass(frozen=True)
class RoundResult:
    source_id: int
    service: str
    replicas: int
    failed: int
    rollup: Rollup
    error: str

    @property
    def up(self) -> bool:
        return self.failed == 0


# --- The metric map --------------------------------------------------------------------------------


def map_key(metric_map: MetricMap) -> str:
    return "|".join(
        [metric_map.histogram, metric_map.requests or "", metric_map.route_label, metric_map.status_label]
        + list(metric_map.errors)
    )


def configured_map(source: MetricSource) -> MetricMap | None:
    """The map in the source's own fields, or None to recognise a known one."""
    if not source.histogram_metric:
        return None
    errors = tuple(part.strip() for part in source.error_statuses.split(",") if part.strip()) or ("5xx",)
    return MetricMap(
        histogram=source.histogram_metric,
        requests=source.requests_metric or None,
        route_label=source.route_label,
        status_label=source.status_label,
        errors=errors,
    )


def _remembered_map(state: Mapping[str, Any]) -> MetricMap | None:
    key = state.get("map")
    return next((known for known in KNOWN_MAPS if map_key(known) == key), None)


# --- Fetching one replica (no database: runs in a thread) ----------------------------------------


def _reason(error: BaseException, timeout: float) -> str:
    if isinstance(error, urllib.error.HTTPError):
        return f"answered HTTP {error.code} {error.reason or ''}".rstrip()
    if isinstance(error, urllib.error.URLError):
        if not isinstance(error.reason, BaseException):
            return f"could not be reached ({error.reason})"
        error = error.reason
    if isinstance(error, TimeoutError):
        return f"did not answer within {timeout:g} s"
    if isinstance(error, ConnectionRefusedError):
        return "refused the connection"
    if isinstance(error, ConnectionResetError | BrokenPipeError | http.client.RemoteDisconnected):
        return "closed the connection before answering"
    if isinstance(error, http.client.IncompleteRead):
        return "closed the connection in the middle of its answer"
    if isinstance(error, socket.gaierror):
        return f"has a host name that does not resolve ({error.strerror})"
    if isinstance(error, http.client.HTTPException):
        return f"gave an answer that is not HTTP ({type(error).__name__})"
    if isinstance(error, OSError):
        return f"could not be reached ({error.strerror or error})"
    return f"failed ({type(error).__name__}: {error})"


def _download(url: str, timeout: float, token: str) -> str:
    headers = {"Accept": ACCEPT, "User-Agent": "controlplane-scraper"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, headers=headers)  # noqa: S310 - the source's URLs are http(s) (MetricSource.clean)
    deadline = time.monotonic() + timeout
    try:
        with opener.open(request, timeout=timeout) as response:
            chunks: list[bytes] = []
            size = 0
            while chunk := response.read(256 * 1024):
                size += len(chunk)
                if size > MAX_BODY_BYTES:
                    raise ScrapeFailed(f"answered more than {MAX_BODY_BYTES // (1024 * 1024)} MB")
                if time.monotonic() > deadline:
                    raise ScrapeFailed(f"did not finish its answer within {timeout:g} s")
                chunks.append(chunk)
            # http.client ends a body cut short of its Content-Length quietly, with what came.
            if response.length:
                raise ScrapeFailed("closed the connection in the middle of its answer")
    except ScrapeFailed:
        raise
    except Exception as error:  # every way a fetch fails is a failed scrape, said in words
        raise ScrapeFailed(_reason(error, timeout)) from None
    try:
        return b"".join(chunks).decode("utf-8")
    except UnicodeDecodeError:
        raise ScrapeFailed("answered something that is not UTF-8 text") from None


def _finite(routes: Mapping[str, Counters]) -> bool:
    for counters in routes.values():
        if not (math.isfinite(counters.requests) and math.isfinite(counters.errors)):
            return False
        if not all(math.isfinite(count) for count in counters.buckets.values()):
            return False
    return True


def read_replica(
    text: str, metric_map: MetricMap | None, *, recognised: bool = False
) -> tuple[dict[str, Counters], MetricMap]:
    """A replica's counters per route from its text; the map recognised when none was given, or when
    the one given was recognised earlier (``recognised``) and is no longer there."""
    try:
        if metric_map is None:
            exposition = read_families(text, ALL_KNOWN_FAMILIES)
            metric_map = recognise(exposition)
            if metric_map is None:
                names = ", ".join(known.histogram for known in KNOWN_MAPS)
                raise ScrapeFailed(
                    f"has none of the metric families recognised without configuration ({names}); "
                    "name its latency histogram and labels in the source"
                )
        else:
            exposition = read_families(text, metric_map.families)
            if not exposition.family(metric_map.histogram) and metric_map.histogram not in exposition.types:
                if recognised:
                    return read_replica(text, None)
                raise ScrapeFailed(f"has no metric family named {metric_map.histogram}")
    except ExpositionError as error:
        raise ScrapeFailed(f"answered something that is not the Prometheus text format ({error})") from None
    routes = route_counters(exposition, metric_map)
    if not _finite(routes):
        raise ScrapeFailed("has a request counter or bucket that is NaN or infinite")
    return routes, metric_map


def fetch_replica(
    url: str, timeout: float, token: str, metric_map: MetricMap | None, recognised: bool = False
) -> Fetched:
    """Scrape one replica; never raises (a failure is a result, with its reason in words)."""
    try:
        text = _download(url, timeout, token)
        routes, found = read_replica(text, metric_map, recognised=recognised)
    except ScrapeFailed as failure:
        reason = str(failure)
        if token and token in reason:
            reason = reason.replace(token, "[redacted]")
        return Fetched(url, None, metric_map, reason)
    return Fetched(url, routes, found)


# --- The state kept between rounds -----------------------------------------------------------------


def _encode_routes(routes: Mapping[str, Counters]) -> dict[str, list[Any]]:
    return {route: [c.requests, c.errors, encode_buckets(c.buckets)] for route, c in routes.items()}


def _decode_routes(stored: Mapping[str, Any]) -> dict[str, Counters]:
    return {
        route: Counters(float(requests), float(errors), decode_buckets(buckets))
        for route, (requests, errors, buckets) in stored.items()
    }


def _previous(
    state: Mapping[str, Any], key: str, now: datetime, interval: float
) -> tuple[datetime, list[ReplicaScrape]]:
    """The previous round's scrapes to pair with, or none when it is stale or read with another map."""
    at_text = state.get("at")
    if state.get("version") != STATE_VERSION or state.get("map") != key or not at_text:
        return now, []
    at = datetime.fromisoformat(at_text)
    if now - at > timedelta(seconds=STALE_INTERVALS * interval) or at >= now:
        return at, []
    replicas = state.get("replicas") or {}
    return at, [
        ReplicaScrape(url, at, _decode_routes(routes) if routes is not None else None)
        for url, routes in replicas.items()
    ]


# --- One round of one source -----------------------------------------------------------------------


def _describe(fetched: Sequence[Fetched]) -> str:
    failures = [item for item in fetched if item.routes is None]
    if not failures:
        return ""
    parts = [f"{redact_url(item.replica)} {item.error}" for item in failures]
    if len(fetched) == 1:
        return f"The scrape of {parts[0]}."
    return f"{len(failures)} of {len(fetched)} replicas failed: " + "; ".join(parts) + "."


def _token(source: MetricSource) -> tuple[str, str]:
    """(token, error): the bearer token from its environment variable, or why there is none."""
    if not source.bearer_token_env:
        return "", ""
    token = os.environ.get(source.bearer_token_env, "")
    if not token:
        return "", (
            f"The environment variable {source.bearer_token_env}, named for the bearer token, "
            "is not set in the worker's environment."
        )
    return token, ""


def fetch_sources(sources: Sequence[MetricSource]) -> dict[int, list[Fetched]]:
    """Every replica of every source fetched at once; results per source id, in URL order."""
    jobs: list[tuple[int, str, float, str, MetricMap | None, bool]] = []
    results: dict[int, list[Fetched]] = {}
    for source in sources:
        token, problem = _token(source)
        results[source.pk] = []
        configured = configured_map(source)
        metric_map = configured or _remembered_map(source.state or {})
        for url in source.url_list():
            if problem:
                results[source.pk].append(Fetched(url, None, metric_map, "could not be scraped"))
            else:
                jobs.append((source.pk, url, source.timeout_seconds, token, metric_map, configured is None))
    if len(jobs) == 1:
        pk, url, timeout, token, metric_map, recognised = jobs[0]
        results[pk].append(fetch_replica(url, timeout, token, metric_map, recognised))
    elif jobs:
        with ThreadPoolExecutor(max_workers=min(MAX_THREADS, len(jobs)), thread_name_prefix="scrape") as pool:
            futures = [(job[0], pool.submit(fetch_replica, *job[1:])) for job in jobs]
            for pk, future in futures:
                results[pk].append(future.result())
    return results


def _round_error(source: MetricSource, fetched: Sequence[Fetched]) -> str:
    _, problem = _token(source)
    return problem or _describe(fetched)


def source_record_round(source: MetricSource, fetched: Sequence[Fetched], now: datetime) -> RoundResult:
    """Pair this round with the previous one, add the increases to the minute and the hour, and keep
    this round's counters and the source's status. One transaction."""
    state = source.state or {}
    metric_map = configured_map(source) or next(
        (item.metric_map for item in fetched if item.metric_map is not None), None
    )
    key = map_key(metric_map) if metric_map is not None else ""
    started, previous = _previous(state, key, now, source.interval_seconds)
    # A replica read with a map other than the one remembered (two replicas recognised differently)
    # cannot be paired: counted as failed rather than mixed in.
    current = [
        ReplicaScrape(
            item.replica,
            now,
            item.routes if item.metric_map is None or map_key(item.metric_map) == key else None,
            item.error,
        )
        for item in fetched
    ]
    result = rollup(previous, current, started, now)
    failed = sum(1 for item in fetched if item.routes is None)
    error = _round_error(source, fetched)
    answered = len(fetched) - failed
    with transaction.atomic():
        minute_add(source.service_id, now, result, replicas=len(fetched), failed=failed)
        new_state: dict[str, Any] = {
            "version": STATE_VERSION,
            "map": key,
            "at": now.isoformat(),
            "replicas": {
                scrape.replica: _encode_routes(scrape.routes) if scrape.routes is not None else None
                for scrape in current
            },
        }
        source.state = new_state
        source.up = failed == 0 and bool(fetched)
        source.last_error = error
        fields = ["state", "up", "last_error"]
        if answered:
            source.last_success = now
            fields.append("last_success")
        source.save(update_fields=fields)
    if error:
        logger.warning("scrape of service %s (source %s): %s", source.service.name, source.pk, error)
    return RoundResult(source.pk, source.service.name, len(fetched), failed, result, error)


# --- The rows ------------------------------------------------------------------------------------


def _add(row: ServiceMinute | ServiceHour, counters: Counters, seconds: float = 0.0) -> None:
    merged = decode_buckets(row.buckets)
    for bound, count in counters.buckets.items():
        merged[bound] = merged.get(bound, 0.0) + count
    row.requests = (row.requests or 0.0) + counters.requests
    row.errors = (row.errors or 0.0) + counters.errors
    row.buckets = encode_buckets(merged)
    row.seconds += seconds


def _busiest(routes: Mapping[str, Counters]) -> dict[str, Counters]:
    """At most MAX_ROUTES routes with something counted, route names cut to the column's length; the
    whole-service row keeps every request either way."""
    counted = {route: c for route, c in routes.items() if c.requests or any(c.buckets.values())}
    if len(counted) > MAX_ROUTES:
        kept = sorted(counted, key=lambda route: counted[route].requests, reverse=True)[:MAX_ROUTES]
        counted = {route: counted[route] for route in kept}
    merged: dict[str, Counters] = {}
    for route, counters in counted.items():
        name = route[:ROUTE_LENGTH] or "(no route)"
        merged[name] = merged[name] + counters if name in merged else counters
    return merged


def minute_add(service_id: int, now: datetime, result: Rollup, *, replicas: int, failed: int) -> None:
    """Add a round to the minute's rows (whole service and per route) and the hour's row.

    The rows are created empty first (ignoring the ones that exist), then locked and added to, so two
    sources of one service writing the same minute add up rather than overwrite or collide.
    """
    minute = now.replace(second=0, microsecond=0)
    seconds = (result.end - result.start).total_seconds()
    hour = minute.replace(minute=0)
    routes = _busiest(result.routes) if result.routes is not None else {}
    names = ["", *routes]
    with transaction.atomic():
        ServiceMinute.objects.bulk_create(
            [ServiceMinute(service_id=service_id, minute=minute, route=name) for name in names],
            ignore_conflicts=True,
        )
        rows = {
            row.route: row
            for row in ServiceMinute.objects.select_for_update().filter(
                service_id=service_id, minute=minute, route__in=names
            )
        }
        whole = rows[""]
        whole.scrapes += replicas
        whole.failed += failed
        if result.service is not None:
            _add(whole, result.service, seconds)
        for name, counters in routes.items():
            _add(rows[name], counters)  # a route's rate divides by its service row's seconds
        ServiceMinute.objects.bulk_update(
            list(rows.values()), ["requests", "errors", "buckets", "seconds", "scrapes", "failed"]
        )

        ServiceHour.objects.bulk_create([ServiceHour(service_id=service_id, hour=hour)], ignore_conflicts=True)
        hourly = ServiceHour.objects.select_for_update().get(service_id=service_id, hour=hour)
        hourly.scrapes += replicas
        hourly.failed += failed
        if result.service is not None:
            _add(hourly, result.service, seconds)
        hourly.save(update_fields=["requests", "errors", "buckets", "seconds", "scrapes", "failed"])


# --- What beat and the command run ---------------------------------------------------------------


def _due(source: MetricSource, now: datetime) -> bool:
    if source.last_attempt is None:
        return True
    return (now - source.last_attempt).total_seconds() >= source.interval_seconds - TICK_SECONDS / 2


def source_claim(source: MetricSource, now: datetime) -> bool:
    """Take the source's round: a conditional UPDATE on last_attempt, so that of two workers that saw
    it due only one scrapes it."""
    if source.last_attempt is None:
        unchanged = Q(last_attempt__isnull=True)
    else:
        unchanged = Q(last_attempt=source.last_attempt)
    claimed = MetricSource.objects.filter(unchanged, pk=source.pk).update(last_attempt=now) == 1
    if claimed:
        source.last_attempt = now
    return claimed


def scrape_sources_run(sources: Iterable[MetricSource], *, now: datetime | None = None) -> list[RoundResult]:
    """Claim and scrape the given sources in one round: all their replicas fetched at once."""
    now = now or timezone.now()
    claimed = [source for source in sources if source_claim(source, now)]
    if not claimed:
        return []
    fetched = fetch_sources(claimed)
    return [source_record_round(source, fetched[source.pk], now) for source in claimed]


def scrape_sources(*, service: str | None = None) -> Any:
    """The enabled scrape sources of enabled services (of one service, when named)."""
    sources = MetricSource.objects.filter(kind=SourceKind.SCRAPE, enabled=True, service__enabled=True)
    if service is not None:
        sources = sources.filter(service__name=service)
    return sources.select_related("service")


def scrape_due_sources(*, now: datetime | None = None) -> list[RoundResult]:
    """Beat's pass: every source whose interval has passed, when the performance_monitoring flag is on."""
    from flags.selectors import PERFORMANCE_MONITORING, is_on
    from monitoring.promql import evaluate_due_sources

    if not is_on(PERFORMANCE_MONITORING, default=True):
        return []
    now = now or timezone.now()
    evaluate_due_sources(now=now)  # prometheus sources: their server evaluates, the samples are stored
    due = [source for source in scrape_sources() if _due(source, now)]
    return scrape_sources_run(due, now=now)
