from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitoring import slo
from monitoring.exposition import ExpositionError, read_families
from monitoring.rollup import (
    DJANGO_PROMETHEUS,
    INSTRUMENTATOR,
    KNOWN_MAPS,
    OPENTELEMETRY,
    Counters,
    MetricMap,
    ReplicaScrape,
    Rollup,
    combine,
    histogram_quantile,
    read_scrape,
    recognise,
    rollup,
)

START = datetime(2026, 12, 2, 6, 0, tzinfo=UTC)
END = START + timedelta(minutes=1)
INF = math.inf


def instrumentator_text(ok: float, failed: float, buckets: dict[str, float]) -> str:
    """One route, /api/match, under prometheus-fastapi-instrumentator's names."""
    lines = [
        "# HELP http_requests_total Total number of requests by method, status and handler.",
        "# TYPE http_requests_total counter",
        f'http_requests_total{{handler="/api/match",method="POST",status="2xx"}} {ok}',
        f'http_requests_total{{handler="/api/match",method="POST",status="5xx"}} {failed}',
        "# TYPE http_request_duration_seconds histogram",
    ]
    for bound, count in buckets.items():
        lines.append(f'http_request_duration_seconds_bucket{{handler="/api/match",le="{bound}",method="POST"}} {count}')
    total = buckets["+Inf"]
    lines.append(f'http_request_duration_seconds_count{{handler="/api/match",method="POST"}} {total}')
    lines.append(f'http_request_duration_seconds_sum{{handler="/api/match",method="POST"}} {total * 0.3}')
    lines.append("process_cpu_seconds_total 12.5")
    return "\n".join(lines) + "\n"


def scrape(replica: str, text: str | None) -> ReplicaScrape:
    if text is None:
        return ReplicaScrape(replica, END, None, "connection refused")
    return ReplicaScrape(replica, END, read_scrape(text, INSTRUMENTATOR))


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        # 10 under 0.1 s, 50 more under 0.5 s, 30 more under 1 s, 10 above.
        (0.1, 0.1),  # rank 10: the whole first bucket, which starts at 0
        (0.05, 0.05),  # rank 5: half of it
        (0.5, 0.42),  # rank 50: 40 of the 50 in (0.1, 0.5]: 0.1 + 0.4 * 40/50
        (0.9, 1.0),  # rank 90: the top of (0.5, 1]
        (0.95, 1.0),  # rank 95: in the +Inf bucket, so the highest finite bound
        (0.99, 1.0),
    ],
)
def test_quantiles_interpolate_within_the_bucket(q: float, expected: float) -> None:
    buckets = {0.1: 10.0, 0.5: 60.0, 1.0: 90.0, INF: 100.0}
    assert histogram_quantile(q, buckets) == pytest.approx(expected)


def test_p50_p95_p99_by_hand() -> None:
    counters = Counters(requests=100, buckets={0.1: 10.0, 0.5: 60.0, 1.0: 100.0, INF: 100.0})
    assert counters.p50 == pytest.approx(0.42)
    assert counters.p95 == pytest.approx(0.5 + 0.5 * 35 / 40)  # 0.9375
    assert counters.p99 == pytest.approx(0.5 + 0.5 * 39 / 40)  # 0.9875


def test_quantile_without_observations_or_without_inf_bucket_is_none() -> None:
    assert histogram_quantile(0.5, {0.1: 0.0, INF: 0.0}) is None
    assert histogram_quantile(0.5, {0.1: 3.0, 1.0: 5.0}) is None
    assert histogram_quantile(0.5, {}) is None
    with pytest.raises(ValueError, match="between 0 and 1"):
        histogram_quantile(1.5, {0.1: 1.0, INF: 1.0})


def test_non_monotonic_buckets_are_evened_out_as_prometheus_does() -> None:
    # The 0.5 bucket counted as 10, not 8: rank 15 is 5 of the 10 in (0.5, 1].
    assert histogram_quantile(0.75, {0.1: 10.0, 0.5: 8.0, 1.0: 20.0, INF: 20.0}) == pytest.approx(0.75)


def test_one_replica_one_minute() -> None:
    previous = [scrape("a", instrumentator_text(100, 1, {"0.1": 50, "0.5": 90, "1.0": 100, "+Inf": 101}))]
    current = [scrape("a", instrumentator_text(190, 11, {"0.1": 70, "0.5": 150, "1.0": 190, "+Inf": 201}))]

    result = rollup(previous, current, START, END)

    assert result.missing == ()
    assert result.service is not None and result.routes is not None
    assert set(result.routes) == {"/api/match"}
    assert result.service.requests == 100
    assert result.service.errors == 10
    assert result.service.error_ratio == pytest.approx(0.1)
    assert dict(result.service.buckets) == {0.1: 20.0, 0.5: 60.0, 1.0: 90.0, INF: 100.0}
    assert result.service.p50 == pytest.approx(0.1 + 0.4 * 30 / 40)  # rank 50: the 30th of the 40 in (0.1, 0.5]


def test_a_counter_reset_counts_from_zero() -> None:
    # The replica restarted during the minute: its counters are lower than before.
    previous = [scrape("a", instrumentator_text(5000, 40, {"0.1": 4000, "0.5": 5000, "1.0": 5040, "+Inf": 5040}))]
    current = [scrape("a", instrumentator_text(30, 3, {"0.1": 20, "0.5": 30, "1.0": 33, "+Inf": 33}))]

    result = rollup(previous, current, START, END)

    assert result.service is not None
    assert result.service.requests == 33
    assert result.service.errors == 3
    assert dict(result.service.buckets) == {0.1: 20.0, 0.5: 30.0, 1.0: 33.0, INF: 33.0}


def test_two_replicas_are_summed_each_across_its_own_reset() -> None:
    previous = [
        scrape("a", instrumentator_text(100, 0, {"0.1": 100, "+Inf": 100})),
        scrape("b", instrumentator_text(900, 9, {"0.1": 800, "+Inf": 909})),
    ]
    current = [
        scrape("a", instrumentator_text(160, 2, {"0.1": 150, "+Inf": 162})),  # +60 ok, +2 failed
        scrape("b", instrumentator_text(18, 2, {"0.1": 10, "+Inf": 20})),  # restarted: 18 ok, 2 failed
    ]

    result = rollup(previous, current, START, END)

    assert result.service is not None and result.routes is not None
    assert result.service.requests == 62 + 20
    assert result.service.errors == 4
    assert dict(result.service.buckets) == {0.1: 50.0 + 10.0, INF: 62.0 + 20.0}
    assert result.routes["/api/match"] == result.service


def test_a_failed_scrape_is_a_gap_not_a_zero() -> None:
    text = instrumentator_text(100, 0, {"0.1": 100, "+Inf": 100})
    later = instrumentator_text(200, 0, {"0.1": 200, "+Inf": 200})

    both_failed = rollup([scrape("a", text)], [scrape("a", None)], START, END)
    assert both_failed.service is None and both_failed.routes is None
    assert both_failed.missing == ("a",)

    after_failure = rollup([scrape("a", None)], [scrape("a", later)], START, END)
    assert after_failure.service is None

    first_scrape = rollup([], [scrape("a", later)], START, END)
    assert first_scrape.service is None

    # One replica of two failed: the other's figures, and the failed one named.
    partial = rollup([scrape("a", text), scrape("b", text)], [scrape("a", later), scrape("b", None)], START, END)
    assert partial.service is not None
    assert partial.service.requests == 100
    assert partial.missing == ("b",)

    # A replica that disappeared from the round is missing too.
    gone = rollup([scrape("a", text), scrape("b", text)], [scrape("a", later)], START, END)
    assert gone.missing == ("b",)


def test_a_quiet_minute_is_zero_not_a_gap() -> None:
    text = instrumentator_text(100, 0, {"0.1": 100, "+Inf": 100})
    quiet = rollup([scrape("a", text)], [scrape("a", text)], START, END)

    assert quiet.service is not None
    assert quiet.service.requests == 0
    assert quiet.service.error_ratio is None
    assert quiet.service.p95 is None


def test_a_route_new_since_the_last_scrape_counts_whole() -> None:
    empty = "# TYPE http_requests_total counter\n"
    result = rollup([scrape("a", empty)], [scrape("a", instrumentator_text(3, 1, {"0.1": 4, "+Inf": 4}))], START, END)

    assert result.service is not None
    assert result.service.requests == 4
    assert result.service.errors == 1


def test_garbage_scrape_raises_naming_the_line() -> None:
    with pytest.raises(ExpositionError, match="line 1"):
        read_scrape("<!doctype html><title>502 Bad Gateway</title>\n", INSTRUMENTATOR)


def otel_lines(status: str, under: int, total: int, seconds: float) -> list[str]:
    labels = f'http_request_method="GET",http_response_status_code="{status}",http_route="/users/{{id}}"'
    family = "http_server_request_duration_seconds"
    return [
        f'{family}_bucket{{{labels},le="0.25"}} {under}',
        f'{family}_bucket{{{labels},le="+Inf"}} {total}',
        f"{family}_count{{{labels}}} {total}",
        f"{family}_sum{{{labels}}} {seconds}",
    ]


OTEL_TEXT = "\n".join(
    [
        "# TYPE http_server_request_duration_seconds histogram",
        *otel_lines("200", 8, 9, 1.2),
        *otel_lines("503", 0, 1, 5.0),
    ]
)

DJANGO_TEXT = """\
# TYPE django_http_requests_latency_seconds_by_view_method histogram
django_http_requests_latency_seconds_by_view_method_bucket{le="0.5",method="GET",view="profile"} 3.0
django_http_requests_latency_seconds_by_view_method_bucket{le="+Inf",method="GET",view="profile"} 4.0
django_http_requests_latency_seconds_by_view_method_count{method="GET",view="profile"} 4.0
# TYPE django_http_responses_total_by_status_view_method_total counter
django_http_responses_total_by_status_view_method_total{method="GET",status="200",view="profile"} 3.0
django_http_responses_total_by_status_view_method_total{method="GET",status="500",view="profile"} 1.0
"""


def test_opentelemetry_statuses_come_from_the_histogram() -> None:
    routes = read_scrape(OTEL_TEXT, OPENTELEMETRY)

    assert routes["/users/{id}"].requests == 10
    assert routes["/users/{id}"].errors == 1
    assert dict(routes["/users/{id}"].buckets) == {0.25: 8.0, INF: 10.0}


def test_django_prometheus_names() -> None:
    routes = read_scrape(DJANGO_TEXT, DJANGO_PROMETHEUS)

    assert routes["profile"] == Counters(requests=4.0, errors=1.0, buckets={0.5: 3.0, INF: 4.0})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (instrumentator_text(1, 0, {"0.1": 1, "+Inf": 1}), INSTRUMENTATOR),
        (OTEL_TEXT, OPENTELEMETRY),
        (DJANGO_TEXT, DJANGO_PROMETHEUS),
        ("process_cpu_seconds_total 1\n", None),
    ],
)
def test_known_names_are_recognised(text: str, expected: MetricMap | None) -> None:
    families = set().union(*(known.families for known in KNOWN_MAPS))
    assert recognise(read_families(text, families)) == expected


def test_which_statuses_are_errors_is_configurable() -> None:
    strict = MetricMap(
        histogram="http_request_duration_seconds",
        requests="http_requests_total",
        route_label="handler",
        status_label="status",
        errors=("5xx", "429"),
    )
    assert strict.is_error("503") and strict.is_error("5xx") and strict.is_error("429")
    assert not strict.is_error("4xx") and not strict.is_error("404") and not strict.is_error("")
    assert not INSTRUMENTATOR.is_error("429")


@pytest.mark.parametrize(
    ("threshold", "expected"),
    [
        (0.5, 60.0),  # on a bound: exact
        (0.3, 35.0),  # half-way through (0.1, 0.5]: 10 + 50 / 2
        (0.05, 5.0),  # half-way through the first bucket, which starts at 0
        (0.0, 0.0),
        (2.0, 90.0),  # beyond the highest finite bound: only what is known to be under
    ],
)
def test_count_under_a_threshold(threshold: float, expected: float) -> None:
    counters = Counters(requests=100, buckets={0.1: 10.0, 0.5: 60.0, 1.0: 90.0, INF: 100.0})
    assert counters.under(threshold) == pytest.approx(expected)


def test_count_under_without_buckets_is_none() -> None:
    assert Counters(requests=3).under(0.5) is None


def test_a_window_combines_rollups_leaving_gaps_out() -> None:
    first = Counters(requests=100, errors=1, buckets={2.0: 95.0, INF: 100.0})
    second = Counters(requests=50, errors=4, buckets={2.0: 40.0, INF: 50.0})
    minutes = [
        Rollup(START, END, {"/a": first}, first),
        Rollup(END, END + timedelta(minutes=1), None, None, ("a",)),
        Rollup(END + timedelta(minutes=1), END + timedelta(minutes=2), {"/a": second}, second),
    ]

    window = combine(minutes)

    assert window == Counters(requests=150, errors=5, buckets={2.0: 135.0, INF: 150.0})
    assert combine(minutes[1:2]) is None
    assert combine([]) is None
    # What the SLOs count from it: 145 of 150 succeeded, 135 of 150 were under 2 s.
    assert slo.availability(window.requests, window.errors) == slo.Counts(145, 150)
    under = window.under(2.0)
    assert under is not None
    assert slo.budget_left(slo.latency(window.requests, under), slo.Objective(0.95)) == pytest.approx(-1)


@settings(max_examples=200, deadline=None)
@given(steps=st.lists(st.tuples(st.integers(min_value=0, max_value=1000), st.booleans()), min_size=1, max_size=20))
def test_rollups_add_up_to_what_was_counted_across_restarts(steps: list[tuple[int, bool]]) -> None:
    # Each step: requests counted between two scrapes, and whether the process restarted just after the
    # earlier scrape (its counter then starts from zero; a reset is only visible if it lowers the value).
    value = 5.0
    scrapes = [ReplicaScrape("a", START, {"/r": Counters(requests=value)})]
    counted = 0.0
    for increment, restarted in steps:
        value = increment if restarted and increment < value else value + increment
        counted += increment
        scrapes.append(ReplicaScrape("a", START, {"/r": Counters(requests=value)}))

    minutes = [rollup([before], [after], START, END) for before, after in zip(scrapes, scrapes[1:], strict=False)]
    window = combine(minutes)

    assert window is not None
    assert window.requests == counted


@settings(max_examples=200, deadline=None)
@given(
    increments=st.lists(st.integers(min_value=0, max_value=50), min_size=2, max_size=6),
    qs=st.lists(st.floats(min_value=0, max_value=1), min_size=2, max_size=5),
)
def test_quantiles_grow_with_q_and_stay_within_the_bounds(increments: list[int], qs: list[float]) -> None:
    bounds = [0.1 * 2**index for index in range(len(increments) - 1)] + [INF]
    cumulative = 0.0
    buckets = {}
    for bound, increment in zip(bounds, increments, strict=True):
        cumulative += increment
        buckets[bound] = cumulative

    values = [histogram_quantile(q, buckets) for q in sorted(qs)]

    if cumulative == 0:
        assert values == [None] * len(values)
        return
    present = [value for value in values if value is not None]
    assert present == values
    assert present == sorted(present)
    assert all(0 <= value <= bounds[-2] for value in present)


def test_quantile_zero_over_an_empty_first_bucket_is_its_bottom() -> None:
    assert histogram_quantile(0, {0.1: 0.0, 0.5: 4.0, INF: 4.0}) == 0.0


def test_a_reset_of_any_counter_resets_the_whole_route() -> None:
    """The process restarted and served 150 requests, 2 failed, before the next scrape: its requests
    happen to be above the old 100, but its errors (10 -> 2) and a bucket went down. All of the route's
    counters began again: its increase is every counter's value, not the requests' difference of 50."""
    previous = [ReplicaScrape("a", START, {"/r": Counters(100, 10, {0.1: 80, INF: 100})})]
    current = [ReplicaScrape("a", END, {"/r": Counters(150, 2, {0.1: 40, INF: 150})})]

    result = rollup(previous, current, START, END)

    assert result.service == Counters(150, 2, {0.1: 40, INF: 150})


def test_a_bucket_going_down_alone_resets_the_route() -> None:
    previous = [ReplicaScrape("a", START, {"/r": Counters(100, 0, {0.1: 80, 0.5: 90, INF: 100})})]
    current = [ReplicaScrape("a", END, {"/r": Counters(120, 0, {0.1: 70, 0.5: 110, INF: 120})})]

    assert rollup(previous, current, START, END).service == Counters(120, 0, {0.1: 70, 0.5: 110, INF: 120})


def test_routes_reset_each_on_its_own() -> None:
    previous = [ReplicaScrape("a", START, {"/r": Counters(100, 10), "/s": Counters(50, 0)})]
    current = [ReplicaScrape("a", END, {"/r": Counters(110, 1), "/s": Counters(60, 0)})]

    result = rollup(previous, current, START, END)

    assert result.routes == {"/r": Counters(110, 1), "/s": Counters(10, 0)}
