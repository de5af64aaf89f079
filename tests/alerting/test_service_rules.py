"""Alert rules on a service's signals (p95, error ratio, up), the performance_alerts flag, and the shipped
p95 and error-rate rules following the product's first service."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from alerting.models import Alert, AlertRule, AlertState, RuleKind
from alerting.services import (
    InvalidAlertSetting,
    alert_rules_evaluate,
    channel_create,
    rule_create,
    shipped_rules_follow_service,
)
from controlplane.audit import Actor
from controlplane.localcopy import forget_all
from controlplane.models import AuditEvent
from flags.services import flag_create
from monitoring.models import RequestRollup, Service, ServiceMinute
from tests.monitoring.service_data import SLOW, add_minutes, make_service, this_minute

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("eager_tasks")]
SYSTEM = Actor.system("tests")
P95_RULE = "p95 latency over 2000 ms"
ERROR_RULE = "error rate over 1 %"
PERFORMANCE = {RuleKind.SERVICE_P95, RuleKind.SERVICE_ERROR_RATIO, RuleKind.P95_LATENCY_MS, RuleKind.ERROR_RATE}


@pytest.fixture
def evaluate(django_capture_on_commit_callbacks):
    def run(now=None):
        with django_capture_on_commit_callbacks(execute=True):
            return alert_rules_evaluate(now or this_minute() + timedelta(seconds=30))

    return run


@pytest.fixture
def backend():
    return make_service("wingmanmatch-backend")


@pytest.fixture
def slack(http_sink):
    return channel_create(
        data={"name": "ops-slack", "kind": "slack", "url": f"http://127.0.0.1:{http_sink.port}/hook"}, actor=SYSTEM
    )


def service_rule(kind: str, threshold: float, *, service: str = "wingmanmatch-backend", **more) -> AlertRule:
    data = {"name": f"{kind} {service}", "kind": kind, "service": service, "threshold": threshold, **more}
    return rule_create(data=data, actor=SYSTEM)


def open_alert(rule: AlertRule) -> Alert | None:
    return Alert.objects.open().filter(rule=rule).first()


def texts(sink) -> list[str]:
    return [json.loads(r.body)["text"] for r in sink.requests]


def set_flag(name: str, on: bool) -> None:
    flag_create(data={"name": name, "enabled": on, "rollout_percent": 100}, actor=SYSTEM)
    forget_all()  # this process reads the rows afresh, as its next look after the version bump would


# --- Validation -----------------------------------------------------------------------------------


def test_a_service_rule_needs_a_service_that_exists(backend):
    with pytest.raises(InvalidAlertSetting) as missing:
        rule_create(data={"name": "p95", "kind": "service_p95", "threshold": 2}, actor=SYSTEM)
    assert missing.value.field == "service" and "needs the service" in missing.value.message
    with pytest.raises(InvalidAlertSetting) as unknown:
        service_rule("service_p95", 2, service="no-such-service")
    assert unknown.value.field == "service" and "no service named 'no-such-service'" in unknown.value.message
    rule = service_rule("service_p95", 2)
    assert rule.condition == "wingmanmatch-backend p95 latency over 2 s for 5 min" and rule.unit == "s"


def test_only_service_and_slo_rules_take_a_service(backend):
    with pytest.raises(InvalidAlertSetting) as refused:
        rule_create(
            data={"name": "x", "kind": "p95_latency_ms", "service": "wingmanmatch-backend", "threshold": 2000},
            actor=SYSTEM,
        )
    assert refused.value.field == "service"


@pytest.mark.parametrize(
    ("kind", "threshold"),
    [("service_error_ratio", 100), ("service_error_ratio", -1), ("service_up", 1), ("service_up", -0.1),
     ("service_p95", 0), ("service_p95", -2)],
    ids=["ratio-100", "ratio-negative", "up-1", "up-negative", "p95-0", "p95-negative"],
)  # fmt: skip
def test_thresholds_out_of_range_are_refused(backend, kind, threshold):
    with pytest.raises(InvalidAlertSetting) as refused:
        service_rule(kind, threshold)
    assert refused.value.field == "threshold"


# --- Evaluation -----------------------------------------------------------------------------------


def test_p95_over_two_seconds_for_five_minutes_fires_then_resolves(backend, slack, alerts_on, evaluate, http_sink):
    rule = service_rule("service_p95", 2, for_evaluations=2, channels=[slack.pk])
    add_minutes(backend, minutes=4, buckets=SLOW)  # p95 4.6875 s
    evaluate()
    pending = open_alert(rule)
    assert pending is not None and pending.state == AlertState.PENDING
    assert pending.last_value == pytest.approx(4.6875)
    assert (pending.component, pending.measurement) == ("wingmanmatch-backend", "p95")
    assert http_sink.requests == []

    evaluate()
    firing = open_alert(rule)
    assert firing is not None and firing.state == AlertState.FIRING
    [text] = texts(http_sink)
    assert "wingmanmatch-backend p95 latency over 2 s" in text

    ServiceMinute.objects.all().delete()
    add_minutes(backend, minutes=4)  # p95 1.5 s
    evaluate()
    firing.refresh_from_db()
    assert firing.state == AlertState.RESOLVED
    assert texts(http_sink)[-1].startswith("[RESOLVED")


def test_no_data_neither_fires_nor_resolves(backend, evaluate):
    rule = service_rule("service_p95", 2, for_evaluations=1)
    evaluate()  # no minute at all
    assert not Alert.objects.filter(rule=rule).exists()

    add_minutes(backend, minutes=4, buckets=SLOW)
    evaluate()
    assert open_alert(rule).state == AlertState.FIRING

    ServiceMinute.objects.all().delete()
    add_minutes(backend, minutes=4, requests=None)  # scrapes went on, no request counted: a gap
    evaluate()
    alert = open_alert(rule)
    assert alert is not None and alert.state == AlertState.FIRING  # silence is not health
    assert alert.last_value == pytest.approx(4.6875)


def test_error_ratio_over_one_percent_fires(backend, evaluate):
    rule = service_rule("service_error_ratio", 1)
    add_minutes(backend, minutes=4, requests=100, errors=1)  # exactly 1 %: not over
    evaluate()
    assert open_alert(rule) is None
    ServiceMinute.objects.all().delete()
    add_minutes(backend, minutes=4, requests=100, errors=5)
    evaluate()
    alert = open_alert(rule)
    assert alert.state == AlertState.FIRING and alert.last_value == pytest.approx(5.0)
    assert rule.condition == "wingmanmatch-backend error ratio over 1 % for 5 min" and rule.unit == "%"


def test_up_zero_fires_when_every_scrape_failed_and_not_when_one_succeeded(backend, evaluate):
    rule = service_rule("service_up", 0)
    add_minutes(backend, minutes=4, requests=None, scrapes=4, failed=3)  # up 0.25
    evaluate()
    assert open_alert(rule) is None
    ServiceMinute.objects.all().delete()
    add_minutes(backend, minutes=4, requests=None, scrapes=4, failed=4)
    evaluate()
    alert = open_alert(rule)
    assert alert.state == AlertState.FIRING and alert.last_value == 0.0
    ServiceMinute.objects.all().delete()
    add_minutes(backend, minutes=4, scrapes=4, failed=0)
    evaluate()
    alert.refresh_from_db()
    assert alert.state == AlertState.RESOLVED


def test_a_threshold_of_up_fires_at_or_below_it(backend, evaluate):
    rule = service_rule("service_up", 0.5)
    add_minutes(backend, minutes=4, scrapes=4, failed=2)  # exactly half
    evaluate()
    assert open_alert(rule).state == AlertState.FIRING


def test_a_deleted_service_reads_no_data(backend, evaluate):
    rule = service_rule("service_up", 0)
    add_minutes(backend, minutes=4, requests=None, failed=4)
    evaluate()
    assert open_alert(rule).state == AlertState.FIRING
    backend.delete()
    summary = evaluate()
    assert summary.errors == []
    assert open_alert(rule).state == AlertState.FIRING  # neither resolved nor an error every minute


# --- performance_alerts -----------------------------------------------------------------------------


def _breach_everything(backend) -> None:
    """A slow, failing, down service and slow, failing control-plane requests."""
    add_minutes(backend, minutes=4, requests=100, errors=50, buckets=SLOW, scrapes=4, failed=4)
    minute = this_minute() - timedelta(minutes=1)
    RequestRollup.objects.create(
        minute=minute, view="flags:list", method="GET", status_class="5xx", count=10, errors=10, le_5000=10
    )


def test_performance_alerts_off_silences_the_latency_and_error_rules_only(backend, evaluate):
    set_flag("performance_alerts", False)
    rules = [service_rule(kind, threshold) for kind, threshold in
             (("service_p95", 2), ("service_error_ratio", 1), ("service_up", 0))]  # fmt: skip
    AlertRule.objects.filter(name__in=(P95_RULE, ERROR_RULE)).update(for_evaluations=1)
    _breach_everything(backend)
    evaluate()
    firing = set(Alert.objects.open().values_list("rule__kind", flat=True))
    assert RuleKind.SERVICE_UP in firing
    assert not firing & {
        RuleKind.SERVICE_P95,
        RuleKind.SERVICE_ERROR_RATIO,
        RuleKind.P95_LATENCY_MS,
        RuleKind.ERROR_RATE,
    }
    assert len(rules) == 3


def test_performance_alerts_on_evaluates_them_and_turning_it_off_closes_their_alerts(
    backend, evaluate, django_capture_on_commit_callbacks
):
    set_flag("performance_alerts", True)
    for kind, threshold in (("service_p95", 2), ("service_error_ratio", 1), ("service_up", 0)):
        service_rule(kind, threshold)
    AlertRule.objects.filter(name__in=(P95_RULE, ERROR_RULE)).update(for_evaluations=1)
    _breach_everything(backend)
    evaluate()
    assert PERFORMANCE | {RuleKind.SERVICE_UP} <= set(Alert.objects.open().values_list("rule__kind", flat=True))

    from flags.services import flag_update

    with django_capture_on_commit_callbacks(execute=True):
        flag_update(name="performance_alerts", changes={"enabled": False}, actor=SYSTEM)
    forget_all()
    evaluate()
    assert set(Alert.objects.open().values_list("rule__kind", flat=True)) == {RuleKind.SERVICE_UP}
    assert Alert.objects.filter(rule__kind__in=PERFORMANCE, state=AlertState.RESOLVED).count() == 4


# --- The shipped rules follow the product's backend ------------------------------------------------


def test_the_first_service_created_moves_the_shipped_rules_onto_it(django_capture_on_commit_callbacks):
    p95, errors = AlertRule.objects.get(name=P95_RULE), AlertRule.objects.get(name=ERROR_RULE)
    assert (p95.kind, errors.kind) == (RuleKind.P95_LATENCY_MS, RuleKind.ERROR_RATE)
    with django_capture_on_commit_callbacks(execute=True):
        Service.objects.create(name="wingmanmatch-backend")  # as admin or make run would
    p95.refresh_from_db()
    errors.refresh_from_db()
    assert (p95.kind, p95.service, p95.threshold) == (RuleKind.SERVICE_P95, "wingmanmatch-backend", 2.0)
    assert (errors.kind, errors.service, errors.threshold) == (
        RuleKind.SERVICE_ERROR_RATIO,
        "wingmanmatch-backend",
        1.0,
    )
    assert (p95.window_minutes, p95.for_evaluations) == (5, 5)  # the hold stays
    assert p95.condition == "wingmanmatch-backend p95 latency over 2 s for 5 min"
    assert AuditEvent.objects.filter(action="alertrule.update", object_id=str(p95.pk)).exists()

    with django_capture_on_commit_callbacks(execute=True):
        Service.objects.create(name="wingmanmatch-worker")  # a second service leaves them be
    p95.refresh_from_db()
    assert p95.service == "wingmanmatch-backend"


def test_a_rule_the_operator_changed_is_left_alone(django_capture_on_commit_callbacks):
    AlertRule.objects.filter(name=P95_RULE).update(kind=RuleKind.CHECK_LATENCY_MS, component="*", measurement="x")
    with django_capture_on_commit_callbacks(execute=True):
        Service.objects.create(name="wingmanmatch-backend")
    assert AlertRule.objects.get(name=P95_RULE).kind == RuleKind.CHECK_LATENCY_MS
    assert AlertRule.objects.get(name=ERROR_RULE).kind == RuleKind.SERVICE_ERROR_RATIO


def test_moving_closes_the_control_planes_open_alerts_and_twice_changes_nothing(evaluate):
    AlertRule.objects.filter(name=P95_RULE).update(for_evaluations=1)
    RequestRollup.objects.create(
        minute=this_minute() - timedelta(minutes=1), view="flags:list", method="GET", status_class="2xx",
        count=10, le_5000=10,
    )  # fmt: skip
    evaluate()
    rule = AlertRule.objects.get(name=P95_RULE)
    assert open_alert(rule).state == AlertState.FIRING
    make_service("wingmanmatch-backend")  # no commit in this test: the command's path
    moved = shipped_rules_follow_service(service="wingmanmatch-backend", actor=SYSTEM)
    assert [r.name for r in moved] == [P95_RULE, ERROR_RULE]
    assert open_alert(rule) is None
    assert shipped_rules_follow_service(service="wingmanmatch-backend", actor=SYSTEM) == []
    assert AlertRule.objects.get(name=P95_RULE).threshold == 2.0  # not scaled twice


def test_the_command_points_them_at_a_service_and_refuses_an_unknown_one(capsys):
    with pytest.raises(CommandError, match="no service named 'nope'"):
        call_command("shipped_rules_follow_service", "nope")
    assert AlertRule.objects.get(name=P95_RULE).kind == RuleKind.P95_LATENCY_MS  # neither moved

    make_service("wingmanmatch-backend")
    call_command("shipped_rules_follow_service", "wingmanmatch-backend")
    out = capsys.readouterr().out
    assert f"{P95_RULE}: now wingmanmatch-backend p95 latency over 2 s for 5 min" in out
    assert f"{ERROR_RULE}: now wingmanmatch-backend error ratio over 1 % for 5 min" in out
    call_command("shipped_rules_follow_service", "wingmanmatch-backend")
    assert "nothing changed" in capsys.readouterr().out
