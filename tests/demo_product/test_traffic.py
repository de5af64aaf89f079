"""The demo product's metrics, read as the control plane reads a scrape: instrumentator's names, errors near
5 % for flaky-*, p95 over 2 s for slow-*, and matching_v2_algorithm making /api/matches faster.

The request generator is driven directly with a seeded RNG (no server, no sleeping)."""

from __future__ import annotations

import random

import pytest
from prometheus_client.exposition import generate_latest

from demo_product.traffic import BUCKETS, Metrics, behaviour, generate, requests_this_second
from monitoring.exposition import read_families
from monitoring.rollup import INSTRUMENTATOR, KNOWN_MAPS, Counters, read_scrape, recognise

REQUESTS = 20_000


def scrape(version: str, *, v2: bool = False, seed: int = 7, metrics: Metrics | None = None) -> str:
    metrics = metrics or Metrics()
    metrics.observe_all(generate(random.Random(seed), REQUESTS, behaviour(version), lambda user: v2))
    return generate_latest(metrics.registry).decode()


def service(text: str) -> Counters:
    total = Counters()
    for counters in read_scrape(text, INSTRUMENTATOR).values():
        total = total + counters
    return total


def test_the_exposition_is_recognised_as_instrumentators_without_configuration():
    text = scrape("v1")
    families = set().union(*(known.families for known in KNOWN_MAPS))
    assert recognise(read_families(text, families)) == INSTRUMENTATOR
    assert 'http_requests_total{handler="/api/matches",method="GET",status="2xx"}' in text
    assert "# TYPE http_request_duration_seconds histogram" in text
    routes = read_scrape(text, INSTRUMENTATOR)
    assert set(routes) == {"/api/matches", "/api/coach/messages", "/api/profile"}
    assert sorted(b for b in routes["/api/matches"].buckets if b != float("inf")) == [float(b) for b in BUCKETS]


def test_a_plain_version_meets_the_targets():
    counters = service(scrape("v1"))
    assert counters.requests == REQUESTS
    assert counters.error_ratio < 0.01  # the report's target: under 1 %
    assert counters.p95 < 2.0  # and a p95 under 2 s
    assert counters.under(2.0) / counters.requests > 0.95  # the latency SLO (95 % within 2 s) holds


@pytest.mark.parametrize("version", ["flaky-1", "flaky-2026.5"])
def test_a_flaky_version_fails_five_percent(version):
    counters = service(scrape(version))
    assert 0.04 < counters.error_ratio < 0.06, counters.error_ratio
    assert counters.p95 < 2.0  # only errors, not slower
    # 5xx only: a profile that is gone (4xx) is not an error.
    text = scrape(version)
    assert 'status="4xx"' in text and 'status="5xx"' in text


def test_a_slow_version_has_a_p95_over_two_seconds():
    counters = service(scrape("slow-1"))
    assert counters.p95 > 2.0, counters.p95
    assert counters.error_ratio < 0.01
    assert service(scrape("v1")).p95 < 2.0


def test_matching_v2_makes_matches_faster_for_the_users_it_is_on_for():
    off = read_scrape(scrape("v1", v2=False), INSTRUMENTATOR)["/api/matches"]
    on = read_scrape(scrape("v1", v2=True), INSTRUMENTATOR)["/api/matches"]
    assert on.p95 < off.p95 / 2, (on.p95, off.p95)
    # The other routes do not read the flag: the same seed gives them the same requests.
    profile_on = read_scrape(scrape("v1", v2=True), INSTRUMENTATOR)["/api/profile"]
    assert profile_on == read_scrape(scrape("v1", v2=False), INSTRUMENTATOR)["/api/profile"]


def test_the_flag_is_asked_per_user_for_matches_only():
    asked: list[str] = []

    def flag_on(user: str) -> bool:
        asked.append(user)
        return user == "user-001"

    requests = list(generate(random.Random(3), 2_000, behaviour("v1"), flag_on))
    matches = [r for r in requests if r.handler == "/api/matches"]
    assert len(asked) == len(matches) > 0
    assert {r.user for r in matches if r.v2} == {"user-001"}
    assert not any(r.v2 for r in requests if r.handler != "/api/matches")


def test_successive_scrapes_roll_up_as_counter_increases():
    metrics = Metrics()
    rng = random.Random(11)
    first = read_scrape(generate_latest(metrics.registry).decode(), INSTRUMENTATOR)
    assert first == {}  # the families are described before the first request, with no series yet
    seconds = [requests_this_second(rng) for _ in range(60)]
    for count in seconds:
        metrics.observe_all(generate(rng, count, behaviour("v1"), lambda user: False))
    after = read_scrape(generate_latest(metrics.registry).decode(), INSTRUMENTATOR)
    increase = Counters()
    for route, counters in after.items():
        increase = increase + counters.increase_since(first.get(route))
    assert increase.requests == sum(seconds)
    assert 2 <= sum(seconds) / len(seconds) <= 6  # a few requests a second
