"""The ``scrape`` metric source's worker: read each replica's /metrics, roll up, store per minute.

One round of a source:

1. Every replica's URL is fetched at once (threads), each with the source's timeout, so one hung replica
   costs only its timeout: the body is read within the time left of it from the request's start (a body
   trickling a byte at a time is cut at that deadline); connecting and the headers are bounded per
   socket read. Each source's round is recorded as soon as its own replicas answered. The text is read
   with ``monitoring.rollup.read_scrape`` for the families the source's MetricMap needs: the map in the
   source's fields when set, else the known map recognised on the first scrape (read with the families
   of every known map once) and remembered in ``source.state``.
2. The increases since the previous round (kept in ``source.state``: each replica's cumulative counters
   per route) come from ``monitoring.rollup.rollup``, which handles counter resets and sums replicas.
3. They are added to the minute's ``ServiceMinute`` rows (route "" for the whole service, one row per
   route) and to the hour's ``ServiceHour`` (the whole service), at the minute the round ended in.

Recording a round reads the source's row again, locked: a worker whose claim was overtaken (the source
came due again and another worker claimed it while this one was still fetching) drops its round and
writes nothing, and a round is always paired with the state as stored, never with a copy loaded before
the claim: no request is counted twice and the state never goes back to an older round.

The seconds. The whole-service row's ``seconds`` is what its requests are divided by for the rate. A
round adds its length times the share of the source's replicas that have a pair (one of two answering:
half, since only its requests are counted: the rate assumes the load spread evenly over the replicas),
divided by the number of enabled scrape sources of the service (each adds its requests to the same
row, so two sources counting 10 req/s each read 20 req/s).

The state keeps at most STATE_ROUTES routes per replica; the rest are summed into one "(other)" route,
chosen the same way round after round (``fold_routes``), so an exporter labelling routes by raw path
cannot grow it without bound.

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
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from controlplane.outbound import opener
from controlplane.redaction import redact_url
from monitoring.bounded_read import BodyTooLarge, read_within
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
# Routes kept per replica in source.state; the rest are summed into OTHER_ROUTE (see fold_routes).
STATE_ROUTES = MAX_ROUTES
OTHER_ROUTE = "(other)"
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
    # One deadline for the whole fetch: the timeout bounds each socket read while connecting and
    # reading the headers, and the body is read within what is left of it (a trickling body cannot
    # stretch the round).
    deadline = time.monotonic() + timeout
    try:
        with opener.open(request, timeout=timeout) as response:
            try:
                body = read_within(response, deadline, MAX_BODY_BYTES)
            except BodyTooLarge:
                raise ScrapeFailed(f"answered more than {MAX_BODY_BYTES // (1024 * 1024)} MB") from None
            except TimeoutError:
                raise ScrapeFailed(f"did not finish its answer within {timeout:g} s") from None
            # http.client ends a body cut short of its Content-Length quietly, with what came.
            if response.length:
                raise ScrapeFailed("closed the connection in the middle of its answer")
    except ScrapeFailed:
        raise
    except Exception as error:  # every way a fetch fails is a failed scrape, said in words
        raise ScrapeFailed(_reason(error, timeout)) from None
    try:
        return body.decode("utf-8")
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


def fold_routes(routes: Mapping[str, Counters], previous: Mapping[str, Counters] | None) -> dict[str, Counters]:
    """A replica's routes as kept in the state: at most STATE_ROUTES of them, the rest summed into
    OTHER_ROUTE, chosen the same way round after round so that every series is paired with itself.

    The routes kept at the previous round stay kept while they are there. Once a replica has more
    routes than that (OTHER_ROUTE is in its previous routes), every route not kept goes on into
    OTHER_ROUTE, a new one too: a route moved out of it would make OTHER_ROUTE fall (read as a reset)
    and the route count from zero, counting its requests twice. Until then a new route is kept while
    there is room, the busiest first. Without a previous round to follow, or after one that kept more
    than STATE_ROUTES (a state written before the cap), the busiest are kept."""
    if len(routes) <= STATE_ROUTES and (previous is None or OTHER_ROUTE not in previous):
        return dict(routes)
    earlier = previous or {}
    kept = [route for route in routes if route in earlier and route != OTHER_ROUTE]
    overflowing = OTHER_ROUTE in earlier
    if len(kept) > STATE_ROUTES:
        kept = sorted(kept, key=lambda route: (-routes[route].requests, route))[:STATE_ROUTES]
    elif not overflowing:
        known = set(kept)
        fresh = sorted(
            (route for route in routes if route not in known), key=lambda route: (-routes[route].requests, route)
        )
        kept += fresh[: max(0, STATE_ROUTES - len(kept))]
    kept_set = set(kept)
    folded = {route: routes[route] for route in kept}
    other = Counters()
    for route, counters in routes.items():
        if route not in kept_set:
            other = other + counters
    folded[OTHER_ROUTE] = other
    return folded


def pairing_routes(
    previous: Mapping[str, Counters] | None, routes: Mapping[str, Counters], folded: Mapping[str, Counters]
) -> Mapping[str, Counters] | None:
    """The previous round's routes to pair ``folded`` (``routes`` after fold_routes) with: as kept, except
    when this round begins OTHER_ROUTE. Its previous value is then the sum of the previous values of the
    routes folded into it now, so that the first round of OTHER_ROUTE counts only their increases (and
    new routes whole), not everything they counted before."""
    if previous is None or OTHER_ROUTE in previous or OTHER_ROUTE not in folded:
        return previous
    other = Counters()
    for route, counters in previous.items():
        if route in routes and route not in folded:
            other = other + counters
    return {**previous, OTHER_ROUTE: other}


def _seconds_weight(source: MetricSource, result: Rollup, current: Sequence[ReplicaScrape]) -> float:
    """The share of the round's seconds to add to the whole-service row, so that the row's requests
    over its seconds is the service's request rate.

    - Replicas: only the replicas with a pair of scrapes are counted, so the round's seconds are
      weighted by their share of the source's replicas (one of two answering: half the seconds), which
      reads the answering replicas' rate as that of the whole source, assuming the load is spread
      evenly over the replicas.
    - Sources: every enabled scrape source of the service adds its requests and its seconds to the
      same row, so each adds its seconds divided by the number of those sources: two sources counting
      10 req/s each over the same time read 20 req/s, not the 10 a plain sum of seconds would give."""
    if not current:
        return 0.0
    missing = set(result.missing)
    paired = sum(1 for scrape in current if scrape.routes is not None and scrape.replica not in missing)
    sources = MetricSource.objects.filter(service_id=source.service_id, kind=SourceKind.SCRAPE, enabled=True).count()
    return paired / len(current) / max(1, sources)


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


def _jobs(
    sources: Sequence[MetricSource],
) -> tuple[dict[int, list[Fetched | None]], list[tuple[int, int, str, float, str, MetricMap | None, bool]]]:
    """Each source's result slots (filled at once for a source without its token) and the fetches to run:
    (source id, slot, url, timeout, token, map, recognised)."""
    jobs: list[tuple[int, int, str, float, str, MetricMap | None, bool]] = []
    results: dict[int, list[Fetched | None]] = {}
    for source in sources:
        token, problem = _token(source)
        configured = configured_map(source)
        metric_map = configured or _remembered_map(source.state or {})
        urls = source.url_list()
        results[source.pk] = [None] * len(urls)
        for slot, url in enumerate(urls):
            if problem:
                results[source.pk][slot] = Fetched(url, None, metric_map, "could not be scraped")
            else:
                jobs.append((source.pk, slot, url, source.timeout_seconds, token, metric_map, configured is None))
    return results, jobs


def fetch_sources_each(sources: Sequence[MetricSource]) -> Iterator[tuple[int, list[Fetched]]]:
    """Every replica of every source fetched at once; each source's results (in URL order) as soon as
    its own replicas have answered, so a slow source does not hold back the others."""
    results, jobs = _jobs(sources)
    pending = {pk: sum(1 for slot in slots if slot is None) for pk, slots in results.items()}
    for pk, count in pending.items():
        if not count:
            yield pk, [item for item in results[pk] if item is not None]
    if not jobs:
        return
    with ThreadPoolExecutor(max_workers=min(MAX_THREADS, len(jobs)), thread_name_prefix="scrape") as pool:
        futures = {pool.submit(fetch_replica, *job[2:]): job[:2] for job in jobs}
        for future in as_completed(futures):
            pk, slot = futures[future]
            results[pk][slot] = future.result()
            pending[pk] -= 1
            if not pending[pk]:
                yield pk, [item for item in results[pk] if item is not None]


def fetch_sources(sources: Sequence[MetricSource]) -> dict[int, list[Fetched]]:
    """Every replica of every source fetched at once; results per source id, in URL order."""
    return dict(fetch_sources_each(sources))


def _round_error(source: MetricSource, fetched: Sequence[Fetched]) -> str:
    _, problem = _token(source)
    return problem or _describe(fetched)


def source_record_round(source: MetricSource, fetched: Sequence[Fetched], now: datetime) -> RoundResult | None:
    """Pair this round with the previous one, add the increases to the minute and the hour, and keep
    this round's counters and the source's status. One transaction.

    The source's row is read again, locked, inside the transaction: the round is paired with the state
    as stored now (never with a copy loaded before the claim), and when ``last_attempt`` is no longer
    this round's claim time (``now``), another worker claimed the source since and owns its state: this
    round is dropped (None) and nothing is written, so no request is counted twice and the state never
    moves back to an older round's counters."""
    with transaction.atomic():
        fresh = (
            MetricSource.objects.select_for_update()
            .filter(pk=source.pk)
            .values("state", "last_attempt", "service_id")
            .first()
        )
        if fresh is None or fresh["last_attempt"] != now:
            logger.info(
                "scrape of service %s (source %s): round dropped, another worker claimed the source since",
                source.service.name,
                source.pk,
            )
            return None
        state = fresh["state"] or {}
        source.state = state
        metric_map = configured_map(source) or next(
            (item.metric_map for item in fetched if item.metric_map is not None), None
        )
        key = map_key(metric_map) if metric_map is not None else ""
        started, previous = _previous(state, key, now, source.interval_seconds)
        before = {scrape.replica: scrape for scrape in previous}
        # A replica read with a map other than the one remembered (two replicas recognised differently)
        # cannot be paired: counted as failed rather than mixed in.
        current: list[ReplicaScrape] = []
        for item in fetched:
            readable = item.routes is not None and (item.metric_map is None or map_key(item.metric_map) == key)
            earlier = before.get(item.replica)
            if item.routes is None or not readable:
                current.append(ReplicaScrape(item.replica, now, None, item.error))
                continue
            folded = fold_routes(item.routes, earlier.routes if earlier is not None else None)
            current.append(ReplicaScrape(item.replica, now, folded, item.error))
            if earlier is not None:
                pairing = pairing_routes(earlier.routes, item.routes, folded)
                before[item.replica] = ReplicaScrape(earlier.replica, earlier.at, pairing, earlier.error)
        result = rollup(before.values(), current, started, now)
        failed = sum(1 for item in fetched if item.routes is None)
        error = _round_error(source, fetched)
        answered = len(fetched) - failed
        minute_add(
            source.service_id,
            now,
            result,
            replicas=len(fetched),
            failed=failed,
            weight=_seconds_weight(source, result, current),
        )
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


def minute_add(
    service_id: int, now: datetime, result: Rollup, *, replicas: int, failed: int, weight: float = 1.0
) -> None:
    """Add a round to the minute's rows (whole service and per route) and the hour's row; the round's
    seconds are added times ``weight`` (see _seconds_weight).

    The rows are created empty first (ignoring the ones that exist), then locked and added to, so two
    sources of one service writing the same minute add up rather than overwrite or collide.
    """
    minute = now.replace(second=0, microsecond=0)
    seconds = (result.end - result.start).total_seconds() * weight
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
    by_pk = {source.pk: source for source in claimed}
    results = {pk: source_record_round(by_pk[pk], fetched, now) for pk, fetched in fetch_sources_each(claimed)}
    return [result for source in claimed if (result := results[source.pk]) is not None]


def scrape_sources(*, service: str | None = None) -> Any:
    """The enabled scrape sources of enabled services (of one service, when named)."""
    sources = MetricSource.objects.filter(kind=SourceKind.SCRAPE, enabled=True, service__enabled=True)
    if service is not None:
        sources = sources.filter(service__name=service)
    # The state (every replica's counters per route) is not needed to tell which are due: it is loaded
    # for the claimed ones only, and read again, locked, when their round is recorded.
    return sources.select_related("service").defer("state")


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
