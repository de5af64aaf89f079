"""A Prometheus-compatible server as a service's metric source (queried over its HTTP API).

Each signal is a PromQL instant query (``GET <base>/api/v1/query?query=...&time=...``) evaluated at the
window's end. The defaults read prometheus-fastapi-instrumentator's names:

    request_rate  sum(rate(http_requests_total{sel}[w]))
    error_ratio   (sum(rate(http_requests_total{sel,status=~"5.."}[w])) or vector(0))
                    / sum(rate(http_requests_total{sel}[w]))
    p50/p95/p99   histogram_quantile(q, sum by (le) (rate(http_request_duration_seconds_bucket{sel}[w])))
    up            avg(avg_over_time(up{sel}[w]))
    (requests)    sum(increase(http_requests_total{sel}[w]))
    (errors)      sum(increase(http_requests_total{sel,status=~"5.."}[w]))
    (buckets)     sum by (le) (increase(http_request_duration_seconds_bucket{sel}[w]))

``sel`` is the source's ``selector`` (label matchers such as ``job="backend"``). A source whose
``histogram_metric`` is OpenTelemetry's ``http_server_request_duration_seconds`` counts requests from that
histogram's ``_count`` with the ``http_response_status_code`` label; any other mapped histogram counts
from ``requests_metric`` (the counter's series name as Prometheus stores it, ``_total`` included) or the
histogram's ``_count``, with ``status_label`` and ``error_statuses`` ("5xx, 429": an ``x`` is any digit).

``window_counters`` gives an SLO a window's counts from the last three (``counters_range`` the same per
step, from ``/api/v1/query_range``, for the budget chart); ``buckets`` must give one series per ``le``.

``source.queries`` overrides any of them ({"p95": "...", "requests": "..."}) with two placeholders:
``$window`` (the window as PromQL writes it: 300s -> ``5m``) and ``$selector`` (the matchers without
braces; where the selector is blank, a comma next to it goes too, so ``foo{$selector,a="b"}`` stays valid).

A query answers one number (``buckets`` one per bound): an empty result, NaN or an infinity is None (no
traffic to judge); more than one series is an error (aggregate with sum or avg). A server that refuses,
does not answer (its whole answer, body included) within the source's timeout, answers an HTTP error
(Prometheus' error JSON is quoted in words) or something not JSON gives None with the error, and the
source's ``up``/``last_error`` say so until a success clears them.
The bearer token is read from the environment variable the source names, at each request; it is never
logged, stored or quoted.
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
import math
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import unquote, urlencode, urlsplit, urlunsplit

from django.db import transaction
from django.utils import timezone

from controlplane import outbound
from controlplane.redaction import redact_url, redact_urls
from monitoring.bounded_read import BodyTooLarge, read_within
from monitoring.models import MetricSource, SignalSample, SourceKind
from monitoring.rollup import Counters
from monitoring.service_signals import Signal, SignalValue

logger = logging.getLogger(__name__)

# The window the worker evaluates every interval (what the dashboard's "now" figures read).
EVALUATION_WINDOW = timedelta(minutes=5)
REQUESTS = "requests"  # the extra query: requests counted in the window
ERRORS = "errors"  # failed requests counted in the window (an availability SLO's bad events)
BUCKETS = "buckets"  # the latency histogram's buckets counted in the window, one series per ``le``
MAX_BODY = 5_000_000
INSTRUMENTATOR_HISTOGRAM = "http_request_duration_seconds"
INSTRUMENTATOR_REQUESTS = "http_requests_total"
OTEL_HISTOGRAM = "http_server_request_duration_seconds"
QUANTILES = {Signal.P50: 0.5, Signal.P95: 0.95, Signal.P99: 0.99}
_T = TypeVar("_T")


class QueryFailed(Exception):
    """A query gave no number, for a reason worth telling the operator (said in ``str``)."""


class SourceUnreachable(QueryFailed):
    """The server did not answer at all (refused, timed out): the other queries would fare no better."""


# --- PromQL text ---------------------------------------------------------------------------------


def promql_duration(window: timedelta) -> str:
    """The window as a PromQL duration in its largest exact unit: 300 s -> "5m", 3600 s -> "1h"."""
    ms = round(window.total_seconds() * 1000)
    if ms <= 0:
        raise ValueError("A PromQL window must be positive.")
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


def _matchers(selector: str) -> str:
    """The source's selector as bare matchers: ``{job="x"}`` and ``job="x"`` alike give ``job="x"``."""
    text = selector.strip()
    if text.startswith("{") and text.endswith("}"):
        text = text[1:-1].strip()
    return text.strip(",").strip()


def _join(*parts: str) -> str:
    return ",".join(part for part in parts if part)


def _error_regex(error_statuses: str) -> str:
    """ "5xx, 429" -> "5..|429" (an x is any character, so "5xx" matches "5xx" and "503" alike)."""
    alternatives = []
    for token in error_statuses.split(","):
        token = token.strip()
        if token and token.isalnum():
            alternatives.append(re.sub("[xX]", ".", token))
    return "|".join(alternatives) or "5.."


def default_queries(source: MetricSource) -> dict[str, str]:
    """The PromQL of every signal (and of the requests count) for the source's names, ``$window`` and
    ``$selector`` left in for ``render`` to fill."""
    histogram = source.histogram_metric.strip() or INSTRUMENTATOR_HISTOGRAM
    if histogram == INSTRUMENTATOR_HISTOGRAM:
        requests = source.requests_metric.strip() or INSTRUMENTATOR_REQUESTS
        status = source.status_label.strip() or "status"
    elif histogram == OTEL_HISTOGRAM:
        requests = source.requests_metric.strip() or f"{histogram}_count"
        status = source.status_label.strip() or "http_response_status_code"
    else:
        requests = source.requests_metric.strip() or f"{histogram}_count"
        status = source.status_label.strip() or "status"
    errors = f'{status}=~"{_error_regex(source.error_statuses)}"'
    all_rate = f"sum(rate({requests}{{$selector}}[$window]))"
    queries = {
        Signal.REQUEST_RATE.value: all_rate,
        Signal.ERROR_RATIO.value: f"(sum(rate({requests}{{$selector,{errors}}}[$window])) or vector(0)) / {all_rate}",
        Signal.UP.value: "avg(avg_over_time(up{$selector}[$window]))",
        REQUESTS: f"sum(increase({requests}{{$selector}}[$window]))",
        ERRORS: f"sum(increase({requests}{{$selector,{errors}}}[$window]))",
        BUCKETS: f"sum by (le) (increase({histogram}_bucket{{$selector}}[$window]))",
    }
    for signal, q in QUANTILES.items():
        queries[signal.value] = f"histogram_quantile({q}, sum by (le) (rate({histogram}_bucket{{$selector}}[$window])))"
    return queries


def render(expression: str, selector: str, window: timedelta) -> str:
    """Fill ``$window`` and ``$selector``; with a blank selector, ``{$selector}`` becomes ``{}`` and a
    comma beside it goes (``{$selector,a="b"}`` -> ``{a="b"}``)."""
    matchers = _matchers(selector)
    text = expression.replace("$window", promql_duration(window))
    if not matchers:
        text = re.sub(r"\$selector\s*,\s*", "", text)
        text = re.sub(r",\s*\$selector", "", text)
        # A bare "{}" after a metric name is valid PromQL, but "up{} " reads oddly in logs: drop it.
        text = re.sub(r"([A-Za-z0-9_:])\{\s*\$selector\s*\}", r"\1", text)
    return text.replace("$selector", matchers)


def queries_for(source: MetricSource) -> dict[str, str]:
    """The defaults with the source's overrides (``queries``: signal name -> PromQL) laid over them."""
    queries = default_queries(source)
    overrides = source.queries if isinstance(source.queries, Mapping) else {}
    for name, expression in overrides.items():
        if name in queries and isinstance(expression, str) and expression.strip():
            queries[name] = expression.strip()
    return queries


# --- The HTTP API --------------------------------------------------------------------------------


def _request(source: MetricSource, params: dict[str, str], endpoint: str = "query") -> urllib.request.Request:
    urls = source.url_list()
    if not urls:
        raise QueryFailed("The source has no base URL.")
    parts = urlsplit(urls[0])
    headers = {"Accept": "application/json", "User-Agent": "controlplane-promql/1"}
    netloc = parts.netloc
    if "@" in netloc:  # user:password@ is Basic authorization (Mimir, Grafana Cloud); urllib would not send it
        userinfo, _, netloc = netloc.rpartition("@")
        user, _, password = userinfo.partition(":")
        headers["Authorization"] = "Basic " + base64.b64encode(f"{unquote(user)}:{unquote(password)}".encode()).decode()
    if source.bearer_token_env:
        token = os.environ.get(source.bearer_token_env, "")
        if not token:
            raise QueryFailed(f"The environment variable {source.bearer_token_env} (the bearer token) is not set")
        headers["Authorization"] = f"Bearer {token}"
    path = parts.path.rstrip("/") + f"/api/v1/{endpoint}"
    url = urlunsplit((parts.scheme, netloc, path, urlencode(params), ""))
    return urllib.request.Request(url, headers=headers)  # noqa: S310 - http(s) only (the model validates)


def _server_error(body: bytes) -> str:
    """Prometheus' error JSON ({"status":"error","errorType":"bad_data","error":"..."}) in words."""
    try:
        answer = json.loads(body)
    except ValueError:
        return ""
    if not isinstance(answer, dict) or not answer.get("error"):
        return ""
    kind = answer.get("errorType")
    return f"{kind}: {answer['error']}" if kind else str(answer["error"])


def _shown(source: MetricSource) -> str:
    urls = source.url_list()
    return redact_url(urls[0]) if urls else "the source"


def query(source: MetricSource, expression: str, at: datetime, *, timeout: float | None = None) -> float | None:
    """The one number ``expression`` gives at ``at`` (None for no data, NaN or an infinity), waiting at
    most ``timeout`` seconds (the source's timeout when None).

    Raises SourceUnreachable when the server does not answer, QueryFailed for any other failure.
    """
    return _one_number(_shown(source), _call(source, "query", {"query": expression, "time": _time(at)}, timeout))


def query_series(
    source: MetricSource, expression: str, at: datetime, *, timeout: float | None = None
) -> list[tuple[dict[str, str], float | None]]:
    """Every series ``expression`` gives at ``at``: (labels, value), a value None for NaN or an infinity.
    An instant vector (a scalar is one series without labels); errors as ``query``."""
    shown = _shown(source)
    data = _call(source, "query", {"query": expression, "time": _time(at)}, timeout)
    kind, result = data.get("resultType"), data.get("result")
    try:
        if kind == "scalar":
            return [({}, _number(result[1]))]  # type: ignore[index]
        if kind == "vector" and isinstance(result, list):
            return [(_labels(item["metric"]), _number(item["value"][1])) for item in result]
    except (TypeError, KeyError, IndexError, ValueError):
        raise QueryFailed(f"{shown} answered a {kind} result that could not be read") from None
    raise QueryFailed(f"the query gave a {kind} result where an instant vector was expected")


def query_range(
    source: MetricSource,
    expression: str,
    start: datetime,
    end: datetime,
    step: timedelta,
    *,
    timeout: float | None = None,
) -> list[tuple[dict[str, str], dict[datetime, float | None]]]:
    """``expression`` evaluated every ``step`` from ``start`` to ``end`` (``/api/v1/query_range``): per
    series, (labels, {moment: value}); a moment the series has no value at is left out. Errors as ``query``."""
    shown = _shown(source)
    params = {"query": expression, "start": _time(start), "end": _time(end), "step": f"{step.total_seconds():.3f}"}
    data = _call(source, "query_range", params, timeout)
    kind, result = data.get("resultType"), data.get("result")
    if kind != "matrix" or not isinstance(result, list):
        raise QueryFailed(f"the range query gave a {kind} result where a matrix was expected")
    try:
        return [
            (
                _labels(item["metric"]),
                {datetime.fromtimestamp(float(at), tz=UTC): _number(value) for at, value in item["values"]},
            )
            for item in result
        ]
    except (TypeError, KeyError, IndexError, ValueError):
        raise QueryFailed(f"{shown} answered a matrix result that could not be read") from None


def _time(at: datetime) -> str:
    return f"{at.timestamp():.3f}"


def _labels(metric: Any) -> dict[str, str]:
    if not isinstance(metric, dict):
        raise TypeError("labels")
    return {str(key): str(value) for key, value in metric.items()}


def _call(source: MetricSource, endpoint: str, params: dict[str, str], timeout: float | None) -> dict[str, Any]:
    """The ``data`` of the server's successful answer to ``/api/v1/<endpoint>``, or the failure in words:
    SourceUnreachable when the server does not answer within ``timeout``, QueryFailed otherwise."""
    shown = _shown(source)
    wait = float(source.timeout_seconds) if timeout is None else timeout
    request = _request(source, {**params, "timeout": f"{max(1, int(wait * 1000))}ms"}, endpoint)
    # One deadline for the call: a server trickling its answer cannot stretch it past ``wait``.
    deadline = time.monotonic() + wait
    try:
        with outbound.opener.open(request, timeout=wait) as response:
            status, body = response.status, read_within(response, deadline, MAX_BODY)
    except BodyTooLarge:
        raise QueryFailed(f"{shown} answered more than {MAX_BODY // 1_000_000} MB") from None
    except urllib.error.HTTPError as error:
        try:
            body = read_within(error, deadline, MAX_BODY)  # an HTTPError without a body reads as b""
        except (TimeoutError, BodyTooLarge, OSError, http.client.HTTPException):
            body = b""
        detail = _server_error(body) or error.reason
        raise QueryFailed(
            redact_urls(f"{shown} answered HTTP {error.code}" + (f": {detail}" if detail else ""))
        ) from None
    except (TimeoutError, urllib.error.URLError, OSError, ValueError) as error:
        reason = getattr(error, "reason", error)
        if isinstance(reason, TimeoutError) or isinstance(error, TimeoutError):
            words = f"no answer within {float(source.timeout_seconds):g} s"
        elif isinstance(reason, ConnectionRefusedError):
            words = "connection refused"
        else:
            words = str(reason) or type(reason).__name__
        raise SourceUnreachable(redact_urls(f"{shown}: {words}")) from None
    except http.client.HTTPException as error:
        raise QueryFailed(f"{shown} answered something that is not HTTP ({type(error).__name__})") from None
    return _data(shown, status, body)


def _data(shown: str, status: int, body: bytes) -> dict[str, Any]:
    try:
        answer = json.loads(body)
    except ValueError:
        raise QueryFailed(f"{shown} answered HTTP {status} with a body that is not JSON") from None
    if not isinstance(answer, dict) or answer.get("status") not in ("success", "error"):
        raise QueryFailed(f"{shown} answered JSON that is not a Prometheus API answer")
    if answer["status"] == "error":
        raise QueryFailed(redact_urls(f"{shown}: {_server_error(body) or 'error without a message'}"))
    data = answer.get("data")
    if not isinstance(data, dict):
        raise QueryFailed(f"{shown} answered without data")
    return data


def _one_number(shown: str, data: dict[str, Any]) -> float | None:
    kind, result = data.get("resultType"), data.get("result")
    try:
        if kind == "scalar":
            return _number(result[1])  # type: ignore[index]
        if kind == "vector" and isinstance(result, list):
            if not result:
                return None
            if len(result) > 1:
                raise QueryFailed(
                    f"the query gave {len(result)} series where a signal needs one (aggregate with sum or avg)"
                )
            return _number(result[0]["value"][1])
    except (TypeError, KeyError, IndexError, ValueError):
        raise QueryFailed(f"{shown} answered a {kind} result that could not be read") from None
    raise QueryFailed(f"the query gave a {kind} result where a signal needs an instant vector or a scalar")


def _number(text: Any) -> float | None:
    value = float(text)
    return value if math.isfinite(value) else None


# --- Signals -------------------------------------------------------------------------------------


def signal_values(
    source: MetricSource, signals: Iterable[Signal], window: timedelta, now: datetime
) -> dict[Signal, SignalValue]:
    """The service's signals over ``window`` ending at ``now``, evaluated by the source's server.

    One query per signal plus one for the requests counted in the window. When the server does not
    answer, the remaining queries are not tried (a dead server costs one timeout, not seven). Records the
    outcome on the source (``up``, ``last_error``) when it changed.
    """
    values, errors = _evaluate(source, tuple(signals), window, now)
    record_outcome(source, errors, now)
    return values


class Evaluation:
    """Queries of one source sharing one deadline (the source's timeout from the first query on), so that
    a server answering each just in time does not hold the caller for many timeouts. Once the server
    does not answer (or the time is spent), the rest are not tried: they fail with the same words. A
    query the server refuses fails alone. ``errors`` lists the failures in words, for ``record_outcome``.
    """

    def __init__(self, source: MetricSource, timeout: float | None = None) -> None:
        self.source = source
        self.timeout = float(source.timeout_seconds) if timeout is None else timeout
        self.deadline = time.monotonic() + self.timeout
        self.queries = queries_for(source)
        self.errors: list[str] = []
        self.unreachable = ""

    def expression(self, key: str, window: timedelta) -> str:
        return render(self.queries[key], self.source.selector, window)

    def left(self) -> float:
        """Seconds left before the deadline; raises SourceUnreachable (recorded once) when none are."""
        if not self.unreachable and self.deadline - time.monotonic() <= 0:
            self.unreachable = f"{_shown(self.source)}: no answer within {self.timeout:g} s"
            self.errors.append(self.unreachable)
        if self.unreachable:
            raise SourceUnreachable(self.unreachable)
        return self.deadline - time.monotonic()

    def run(self, key: str, ask: Callable[[float], _T]) -> _T:
        """``ask(seconds left)`` under the deadline; a failure is recorded (prefixed with ``key``, unless
        the server did not answer) and raised again."""
        try:
            return ask(self.left())
        except SourceUnreachable as error:
            if not self.unreachable:
                self.unreachable = str(error)
                self.errors.append(self.unreachable)
            raise SourceUnreachable(self.unreachable) from None
        except QueryFailed as error:
            self.errors.append(f"{key}: {error}")
            raise

    def value(self, key: str, window: timedelta, at: datetime) -> float | None:
        """The one number of query ``key`` over ``window`` at ``at``."""
        expression = self.expression(key, window)
        return self.run(key, lambda left: query(self.source, expression, at, timeout=left))

    def series(self, key: str, window: timedelta, at: datetime) -> list[tuple[dict[str, str], float | None]]:
        """Every series of query ``key`` over ``window`` at ``at``."""
        expression = self.expression(key, window)
        return self.run(key, lambda left: query_series(self.source, expression, at, timeout=left))


def _evaluate(
    source: MetricSource, signals: tuple[Signal, ...], window: timedelta, now: datetime
) -> tuple[dict[Signal, SignalValue], list[str]]:
    name = source.service.name
    evaluation = Evaluation(source)

    def evaluate(key: str) -> tuple[float | None, str]:
        try:
            return evaluation.value(key, window, now), ""
        except QueryFailed as error:
            return None, str(error)

    requests, _ = evaluate(REQUESTS)
    values: dict[Signal, SignalValue] = {}
    for signal in signals:
        value, error = evaluate(signal.value)
        values[signal] = SignalValue(name, signal, window, value, requests, error)
    return values, evaluation.errors


# --- Counts for SLOs -----------------------------------------------------------------------------


def window_counters(evaluation: Evaluation, window: timedelta, at: datetime, *, buckets: bool) -> Counters | None:
    """What the server counted over ``window`` ending at ``at``, as the scrape path's rollups hold it:
    without ``buckets``, the requests (query ``requests``) and the failed ones (``errors``); with, the
    latency histogram's buckets (``buckets``: one series per ``le``, the bounds as the server has them),
    their +Inf bucket as the requests. None when the server has no such series in the window (no data);
    no error series with requests counted is 0 errors. Failures as ``Evaluation.run`` raises them."""
    if buckets:
        found = _buckets(evaluation.series(BUCKETS, window, at))
        return None if found is None else Counters(found[math.inf], 0.0, found)
    requests = evaluation.value(REQUESTS, window, at)
    if requests is None:
        return None
    return Counters(requests, evaluation.value(ERRORS, window, at) or 0.0)


def _buckets(series: Iterable[tuple[dict[str, str], float | None]]) -> dict[float, float] | None:
    found: dict[float, float] = {}
    for labels, value in series:
        try:
            bound = float(labels["le"])  # "+Inf" reads as inf
        except (KeyError, ValueError):
            raise QueryFailed(
                "the buckets query must give one series per bucket bound, labelled le (sum by (le))"
            ) from None
        found[bound] = found.get(bound, 0.0) + (value or 0.0)
    if not found:
        return None
    if math.inf not in found:
        raise QueryFailed('the latency histogram has no +Inf bucket (le="+Inf")')
    return found


def counters_range(
    source: MetricSource,
    start: datetime,
    end: datetime,
    step: timedelta,
    *,
    buckets: bool,
    timeout: float | None = None,
) -> dict[datetime, Counters]:
    """What the server counted in each ``step`` ending at ``start``, ``start + step``... up to ``end``: the
    queries of ``window_counters`` over ``step`` as range queries (``/api/v1/query_range``), all under the
    source's timeout (or ``timeout``). A moment with nothing counted is left out. Failures as
    ``Evaluation.run`` raises them."""
    evaluation = Evaluation(source, timeout)

    def ask(key: str) -> list[tuple[dict[str, str], dict[datetime, float | None]]]:
        expression = evaluation.expression(key, step)
        return evaluation.run(key, lambda left: query_range(source, expression, start, end, step, timeout=left))

    found: dict[datetime, Counters] = {}
    if buckets:
        per_moment: dict[datetime, list[tuple[dict[str, str], float | None]]] = {}
        for labels, values in ask(BUCKETS):
            for at, value in values.items():
                per_moment.setdefault(at, []).append((labels, value))
        for at, series in per_moment.items():
            counted = _buckets(series)
            if counted is not None:
                found[at] = Counters(counted[math.inf], 0.0, counted)
        return found
    for _, values in ask(REQUESTS):
        for at, value in values.items():
            found[at] = found.get(at, Counters()) + Counters(value or 0.0)
    for _, values in ask(ERRORS):
        for at, value in values.items():
            if at in found:
                found[at] = found[at] + Counters(0.0, value or 0.0)
    return found


def signal_value(source: MetricSource, signal: Signal, window: timedelta, now: datetime) -> SignalValue:
    """One signal of the source's service over ``window`` ending at ``now`` (see ``signal_values``)."""
    return signal_values(source, (signal,), window, now)[signal]


def record_outcome(source: MetricSource, errors: list[str], now: datetime, *, attempt: bool = False) -> None:
    """The source's ``up`` and ``last_error`` after an evaluation; written only when they change, unless
    ``attempt`` (the worker's evaluation, which also stamps ``last_attempt`` and ``last_success``)."""
    error = "; ".join(dict.fromkeys(errors))[:2000]
    changes: dict[str, Any] = {}
    if source.up != (not errors) or source.last_error != error:
        changes.update(up=not errors, last_error=error)
        if errors:
            logger.warning("Prometheus source of %s failed: %s", source.service.name, error)
        elif source.up is False:
            logger.info("Prometheus source of %s answers again", source.service.name)
    if attempt:
        changes["last_attempt"] = now
        if not errors:
            changes["last_success"] = now
    if changes and source.pk is not None:
        MetricSource.objects.filter(pk=source.pk).update(**changes)
        for field, value in changes.items():
            setattr(source, field, value)


def evaluate_source(source: MetricSource, now: datetime | None = None) -> list[SignalSample]:
    """The worker's path for one ``prometheus`` source: evaluate every signal over the last five minutes
    and store them as SignalSample rows (None where there was nothing to judge or the server failed; the
    failure is on the source), stamping the source's attempt."""
    now = now or timezone.now()
    values, errors = _evaluate(source, tuple(Signal), EVALUATION_WINDOW, now)
    return _store(source, values, errors, now)


def _store(
    source: MetricSource, values: Mapping[Signal, SignalValue], errors: list[str], now: datetime
) -> list[SignalSample]:
    samples = [
        SignalSample(service_id=source.service_id, at=now, signal=signal.value, value=value.value)
        for signal, value in values.items()
    ]
    with transaction.atomic():
        SignalSample.objects.bulk_create(samples)
        record_outcome(source, errors, now, attempt=True)
    return samples


def _claim(source: MetricSource, now: datetime) -> bool:
    """Take the source's evaluation with a conditional UPDATE on last_attempt, so that of two workers
    that saw it due only one evaluates it."""
    claimed = MetricSource.objects.filter(pk=source.pk, last_attempt=source.last_attempt).update(last_attempt=now)
    if claimed:
        source.last_attempt = now
    return claimed == 1


def _due(source: MetricSource, now: datetime) -> bool:
    # Half a second of slack: beat's tick lands a little before or after a whole interval.
    return source.last_attempt is None or (now - source.last_attempt).total_seconds() >= source.interval_seconds - 0.5


def evaluate_due_sources(*, now: datetime | None = None) -> list[SignalSample]:
    """Beat's pass over the ``prometheus`` sources whose interval has passed (called from the scrape
    worker's pass, under the same flag): each is claimed, the servers are queried at once (threads, so a
    hung server costs only its own timeout), and the samples stored."""
    now = now or timezone.now()
    sources = MetricSource.objects.filter(kind=SourceKind.PROMETHEUS, enabled=True, service__enabled=True)
    claimed = [source for source in sources.select_related("service") if _due(source, now) and _claim(source, now)]
    if not claimed:
        return []

    def run(source: MetricSource) -> tuple[dict[Signal, SignalValue], list[str]]:
        try:
            return _evaluate(source, tuple(Signal), EVALUATION_WINDOW, now)
        except Exception as error:  # one source's surprise must not cost the others their round
            logger.exception("Evaluating the Prometheus source of %s failed", source.service.name)
            nothing = {signal: SignalValue(source.service.name, signal, EVALUATION_WINDOW, None) for signal in Signal}
            return nothing, [f"the evaluation failed ({type(error).__name__})"]

    with ThreadPoolExecutor(max_workers=min(8, len(claimed)), thread_name_prefix="promql") as pool:
        outcomes = list(pool.map(run, claimed))
    samples: list[SignalSample] = []
    for source, (values, errors) in zip(claimed, outcomes, strict=True):
        samples += _store(source, values, errors, now)
    return samples
