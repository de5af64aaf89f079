"""SLO status end to end on stored rollups: budget left, burn rates over the workbook's windows, which of
its alerts fire, the burn over time; a latency SLO judged by its threshold."""

from __future__ import annotations

from datetime import timedelta

import pytest

from monitoring.selectors import budget_series, slo_budgets, slo_burn_levels, slo_status, slo_statuses
from monitoring.slo import Severity
from tests.monitoring.slo_data import DAY, HOUR, MINUTE, NOW, Traffic, make_service, make_slo

pytestmark = pytest.mark.django_db

FIVE_MIN, THIRTY_MIN = 5 * MINUTE, 30 * MINUTE


@pytest.fixture
def service():
    return make_service()


def _fired(status) -> list[tuple[Severity, float]]:
    return [(alert.severity, alert.factor) for alert in status.firing]


def test_an_hour_of_1_5_percent_errors_pages_on_a_99_9_slo(service):
    # Clean for 30 days, then 1.5 % errors for the last hour: 15x the 0.1 % budget, above the workbook's 14.4.
    make_slo(service)
    Traffic().add(NOW - 30 * DAY, NOW - HOUR).add(NOW - HOUR, NOW, errors=0.015).save(service)

    status = slo_status(service.name, "availability", now=NOW)
    assert status is not None and not status.error
    assert status.burn_rates[HOUR] == pytest.approx(15)
    assert status.burn_rates[FIVE_MIN] == pytest.approx(15)
    assert status.burn_rates[6 * HOUR] == pytest.approx(2.5)  # one bad hour in six
    assert status.burn_rates[3 * DAY] == pytest.approx(15 / 72, rel=0.01)
    assert _fired(status) == [(Severity.PAGE, 14.4)]
    assert status.page_firing and not status.ticket_firing
    # One hour at 15x of 720 spends 15/720 of the budget (the window's start edge reads whole hours).
    assert status.budget_left == pytest.approx(1 - 15 / 720, abs=1e-3)
    assert status.level(Severity.PAGE) == pytest.approx(15 / 14.4)


def test_1_4_percent_for_an_hour_is_under_the_page_rate(service):
    make_slo(service)
    Traffic().add(NOW - 3 * DAY, NOW - HOUR).add(NOW - HOUR, NOW, errors=0.014).save(service)
    status = slo_status(service.name, "availability", now=NOW)
    assert status.burn_rates[HOUR] == pytest.approx(14)
    assert _fired(status) == []


def test_a_burn_that_stopped_five_minutes_ago_does_not_page(service):
    make_slo(service)
    Traffic().add(NOW - 3 * DAY, NOW - HOUR).add(NOW - HOUR, NOW - 10 * MINUTE, errors=0.02).add(
        NOW - 10 * MINUTE, NOW
    ).save(service)
    status = slo_status(service.name, "availability", now=NOW)
    assert status.burn_rates[HOUR] > 14.4 and status.burn_rates[FIVE_MIN] == 0
    assert _fired(status) == []
    # The slower pair (6 h, 30 min) still sees the burn, below its factor of 6.
    assert status.level(Severity.PAGE) == pytest.approx(50 * 20 / 360 / 6)


def test_six_hours_at_7x_page_on_the_slower_pair_and_three_days_at_1_5x_make_a_ticket():
    fast = make_service("fast")
    make_slo(fast)
    Traffic().add(NOW - 3 * DAY, NOW - 6 * HOUR).add(NOW - 6 * HOUR, NOW, errors=0.007).save(fast)
    slow = make_service("slow")
    make_slo(slow)
    Traffic().add(NOW - 3 * DAY, NOW, errors=0.0015).save(slow)

    by_service = {status.service: status for status in slo_statuses(now=NOW)}
    assert by_service["fast"].burn_rates[6 * HOUR] == pytest.approx(7)
    assert _fired(by_service["fast"]) == [(Severity.PAGE, 6)]
    assert by_service["slow"].burn_rates[3 * DAY] == pytest.approx(1.5)
    assert _fired(by_service["slow"]) == [(Severity.TICKET, 1)]
    assert by_service["slow"].ticket_firing and not by_service["slow"].page_firing


def test_budget_left_over_the_window(service):
    # 28 days at 0.025 % errors against a 99.9 % objective: a quarter of the budget spent.
    make_slo(service, window_days=28)
    Traffic().add(NOW - 28 * DAY, NOW, errors=0.00025).save(service)
    status = slo_status(service.name, "availability", now=NOW)
    assert status.budget_left == pytest.approx(0.75)
    assert status.counts.total == pytest.approx(1000 * 28 * 24 * 60, rel=0.001)
    assert status.budget_state == "pass" and status.budget_words == "75.0 % left"
    assert _fired(status) == []


def test_a_latency_slo_counts_requests_within_its_threshold(service):
    # 0.5 % of the requests take 1 s: a 99 % objective within 500 ms has half its budget left...
    make_slo(service, name="fast-enough", kind="latency", target_percent=99, threshold_ms=500, window_days=7)
    # ...and one within 1000 ms has all of it; errors do not count against either.
    make_slo(service, name="within-1s", kind="latency", target_percent=99, threshold_ms=1000, window_days=7)
    Traffic().add(NOW - 7 * DAY, NOW, slow=0.005, errors=0.5).save(service)

    statuses = {status.name: status for status in slo_statuses(now=NOW)}
    assert statuses["fast-enough"].budget_left == pytest.approx(0.5)
    assert statuses["fast-enough"].burn_rates[HOUR] == pytest.approx(0.5)
    assert statuses["within-1s"].budget_left == pytest.approx(1)
    assert statuses["fast-enough"].objective_words == "99 % of requests within 500 ms"


def test_a_latency_burn_pages(service):
    make_slo(service, name="p-latency", kind="latency", target_percent=99.9, threshold_ms=250)
    Traffic().add(NOW - 3 * DAY, NOW - HOUR).add(NOW - HOUR, NOW, slow=0.02).save(service)
    status = slo_status(service.name, "p-latency", now=NOW)
    assert status.burn_rates[HOUR] == pytest.approx(20)
    assert _fired(status) == [(Severity.PAGE, 14.4)]


def test_no_data_is_neither_good_nor_bad(service):
    make_slo(service)
    status = slo_status(service.name, "availability", now=NOW)
    assert status.counts is None and status.budget_left is None
    assert all(rate is None for rate in status.burn_rates.values())
    assert status.level(Severity.PAGE) is None and status.firing == ()
    assert status.budget_state == "" and status.budget_words == "no data"
    assert budget_series(status, now=NOW)[-1].budget_left is None


def test_scrapes_that_saw_no_request_burn_nothing(service):
    make_slo(service)
    Traffic().quiet(NOW - 2 * HOUR, NOW).save(service)
    status = slo_status(service.name, "availability", now=NOW)
    assert status.budget_left is None  # no request: no share to judge
    assert status.level(Severity.PAGE) == 0  # but nothing burns, so an open page alert resolves


def test_the_burn_over_time(service):
    make_slo(service, window_days=7)
    # 14 days of history; 0.05 % errors throughout, and a bad hour (5 %, 50x) two days ago.
    Traffic().add(NOW - 14 * DAY, NOW - 2 * DAY, errors=0.0005).add(
        NOW - 2 * DAY, NOW - 2 * DAY + HOUR, errors=0.05
    ).add(NOW - 2 * DAY + HOUR, NOW, errors=0.0005).save(service)
    status = slo_status(service.name, "availability", now=NOW)
    points = budget_series(status, now=NOW)
    assert len(points) == 7 * 24  # hourly across the 7-day window
    assert points[-1].at == NOW and points[0].at == (NOW - 7 * DAY + 2 * HOUR).replace(minute=0)
    before, after = points[0].budget_left, points[-1].budget_left
    # Before the bad hour, half the budget is left (0.05 % of 0.1 %); the bad hour takes 50/168 more.
    assert before == pytest.approx(0.5)
    assert after == pytest.approx(0.5 - (50 - 0.5) / 168, abs=0.01)
    assert after == pytest.approx(status.budget_left, abs=0.01)
    assert [p.budget_left for p in points] == sorted((p.budget_left for p in points), reverse=True)


def test_a_28_day_burn_chart_has_a_point_every_four_hours(service):
    make_slo(service, window_days=28)
    Traffic().add(NOW - 2 * DAY, NOW).save(service)
    points = budget_series(slo_status(service.name, "availability", now=NOW), now=NOW)
    assert len(points) == 28 * 6 and points[-1].at == NOW
    assert points[1].at - points[0].at == 4 * HOUR
    assert points[0].budget_left is None and points[-1].budget_left == 1  # before any traffic; none bad since


def test_a_prometheus_server_that_refuses_is_no_data_with_the_error():
    service = make_service("upstream", kind="prometheus")  # its server: 127.0.0.1:9, where nothing listens
    make_slo(service)
    make_slo(service, name="fast", kind="latency", threshold_ms=500)

    status = slo_status("upstream", "availability", now=NOW)
    assert status.error == "http://127.0.0.1:9: connection refused"
    assert status.budget_left is None and status.budget_words == "no data"
    assert set(status.burn_rates.values()) == {None} and status.firing == ()
    assert status.level(Severity.PAGE) is None and status.level(Severity.TICKET) is None
    assert budget_series(status, now=NOW) == []
    assert {s.name: s.error for s in slo_statuses(now=NOW)} == dict.fromkeys(
        ("availability", "fast"), "http://127.0.0.1:9: connection refused"
    )
    # None: the rule neither fires nor resolves on it.
    assert slo_burn_levels("page", now=NOW) == {("upstream", "availability"): None, ("upstream", "fast"): None}
    assert slo_budgets(now=NOW, evaluate_prometheus=True) == {"upstream": None}


def test_budgets_per_service_for_the_dashboard():
    worse = make_service("worse")
    make_slo(worse, name="availability")
    make_slo(worse, name="latency", kind="latency", threshold_ms=250)
    Traffic().add(NOW - 30 * DAY, NOW, errors=0.0005).save(worse)  # availability: half left, latency: all
    make_slo(make_service("empty"))
    make_service("no-slo")
    budgets = slo_budgets(now=NOW)
    assert set(budgets) == {"worse", "empty"}
    assert budgets["worse"] == pytest.approx(0.5, abs=0.01) and budgets["empty"] is None


def test_burn_levels_for_the_alert_rule_skip_slos_without_alerting_and_disabled_services():
    on = make_service("on")
    make_slo(on)
    make_slo(on, name="quiet", alerting=False)
    off = make_service("off")
    off.enabled = False
    off.save()
    make_slo(off)
    Traffic().add(NOW - 3 * DAY, NOW - HOUR).add(NOW - HOUR, NOW, errors=0.03).save(on)
    levels = slo_burn_levels("page", now=NOW)
    assert set(levels) == {("on", "availability")}
    assert levels[("on", "availability")] == pytest.approx(30 / 14.4)
    assert slo_burn_levels("ticket", now=NOW)[("on", "availability")] == pytest.approx(30 / 72, rel=0.01)


def test_the_page_reads_few_queries_however_many_slos(service, django_assert_max_num_queries):
    for index in range(5):
        make_slo(service, name=f"slo-{index}")
    Traffic().add(NOW - 2 * HOUR, NOW).save(service)
    # The SLOs, the services' sources, then each (service, window) once: minutes or hours and minutes.
    with django_assert_max_num_queries(20):
        assert len(slo_statuses(now=NOW)) == 5


def test_window_arithmetic_matches_the_workbook_table(service):
    # The workbook's table (99.9 % over 30 days): 14.4x for an hour spends 2 % of the budget.
    make_slo(service)
    Traffic().add(NOW - 30 * DAY, NOW - HOUR).add(NOW - HOUR, NOW, errors=0.0144).save(service)
    status = slo_status(service.name, "availability", now=NOW)
    assert 1 - status.budget_left == pytest.approx(0.02, abs=5e-4)
    assert timedelta(hours=1) in status.burn_rates


def test_budgets_read_only_each_services_window(django_assert_max_num_queries):
    for name in ("one", "two", "three"):
        service = make_service(name)
        make_slo(service, name="availability")
        make_slo(service, name="latency", kind="latency", threshold_ms=250)
    # The SLOs with their services, the sources, then per service its 30 days: hours, and minutes at both edges.
    with django_assert_max_num_queries(2 + 3 * 3):
        assert slo_budgets(now=NOW) == {"one": None, "two": None, "three": None}
