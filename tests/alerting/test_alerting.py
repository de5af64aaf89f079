"""Alert rules evaluated against stored health rows and request rollups; notifications to a local sink."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from alerting.models import (
    Alert,
    AlertRule,
    AlertState,
    Delivery,
    DeliveryStatus,
    NotificationChannel,
    Silence,
)
from alerting.services import (
    InvalidAlertSetting,
    alert_acknowledge,
    alert_rules_evaluate,
    channel_create,
    channel_update,
    rule_create,
    rule_update,
    silence_create,
)
from controlplane.audit import Actor
from controlplane.models import AuditEvent
from flags.services import flag_create, flag_update
from monitoring.models import BUCKET_FIELDS, HealthMetric, RequestRollup

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("eager_tasks")]
SYSTEM = Actor.system("tests")
CHECK_RULE = "any check failing 3 times running"
SECRET_PATH = "/services/T0000/B0000/XyZsecretWebhookPart"


@pytest.fixture
def slack(http_sink):
    return channel_create(
        data={"name": "ops-slack", "kind": "slack", "url": f"http://127.0.0.1:{http_sink.port}{SECRET_PATH}"},
        actor=SYSTEM,
    )


@pytest.fixture
def check_rule(slack):
    """The shipped rule (a data migration), sending to the Slack channel."""
    return rule_update(rule=AlertRule.objects.get(name=CHECK_RULE), changes={"channels": [slack]}, actor=SYSTEM)


class Checks:
    """Stores check results in time order, newest last, within the last hour."""

    def __init__(self) -> None:
        self.clock = timezone.now() - timedelta(minutes=50)

    def record(self, component: str, measurement: str, *statuses: str) -> None:
        for status in statuses:
            self.clock += timedelta(seconds=10)
            HealthMetric.objects.create(time=self.clock, component=component, measurement=measurement, status=status)


@pytest.fixture
def checks() -> Checks:
    return Checks()


@pytest.fixture
def evaluate(django_capture_on_commit_callbacks):
    """Evaluate the rules as beat would: committed, so the queued notifications go out."""

    def run(now=None):
        with django_capture_on_commit_callbacks(execute=True):
            return alert_rules_evaluate(now)

    return run


def slack_texts(sink) -> list[str]:
    return [json.loads(r.body)["text"] for r in sink.requests]


def test_the_default_rules_ship_with_the_migrations():
    rules = {rule.name: rule for rule in AlertRule.objects.all()}
    assert rules["p95 latency over 2000 ms"].threshold == 2000 and rules["p95 latency over 2000 ms"].window_minutes == 5
    assert rules["error rate over 1 %"].kind == "error_rate" and rules["error rate over 1 %"].threshold == 1
    # "for 5 minutes": both request rules hold for 5 evaluations, one a minute, before they fire.
    assert rules["p95 latency over 2000 ms"].for_evaluations == rules["error rate over 1 %"].for_evaluations == 5
    assert rules[CHECK_RULE].component == "*" and rules[CHECK_RULE].threshold == 3
    assert rules["latest verified backup older than 26 hours"].threshold == 26
    assert rules["backup or verification failed"].kind == "backup_failed"
    assert rules["restore drill failed"].kind == "drill_failed"


def test_a_check_failing_three_times_running_fires_then_resolves_on_a_pass(
    alerts_on, check_rule, checks, evaluate, http_sink
):
    checks.record("postgres", "connection", "pass", "fail", "fail")
    checks.record("redis", "connection", "pass", "pass", "pass")
    evaluate()
    assert not Alert.objects.exists()  # two failures are not three
    assert http_sink.requests == []

    checks.record("postgres", "connection", "fail")
    summary = evaluate()
    alert = Alert.objects.get()
    assert alert.state == AlertState.FIRING and alert.fired_at is not None
    assert (alert.component, alert.measurement, alert.last_value) == ("postgres", "connection", 3.0)
    assert summary.fired == [alert.dedup_key]
    [text] = slack_texts(http_sink)
    assert text.startswith("[FIRING critical] any check failing 3 times running postgres:connection")
    assert http_sink.requests[0].path == SECRET_PATH

    checks.record("postgres", "connection", "pass")
    evaluate()
    alert.refresh_from_db()
    assert alert.state == AlertState.RESOLVED and alert.resolved_at is not None
    assert slack_texts(http_sink)[1].startswith("[RESOLVED critical]")
    deliveries = Delivery.objects.filter(alert=alert).order_by("created_at")
    assert [(d.event, d.status, d.attempts, d.response_status) for d in deliveries] == [
        ("firing", "sent", 1, 200),
        ("resolved", "sent", 1, 200),
    ]


def test_pending_until_the_condition_held_for_the_evaluations_asked(alerts_on, check_rule, checks, evaluate, http_sink):
    rule_update(rule=check_rule, changes={"for_evaluations": 2}, actor=SYSTEM)
    checks.record("api", "http", "fail", "fail", "fail")
    evaluate()
    alert = Alert.objects.get()
    assert (alert.state, alert.consecutive) == (AlertState.PENDING, 1)
    assert http_sink.requests == []
    evaluate()
    alert.refresh_from_db()
    assert (alert.state, alert.consecutive) == (AlertState.FIRING, 2)
    assert len(http_sink.requests) == 1


def test_a_pending_alert_that_clears_resolves_without_a_word(alerts_on, check_rule, checks, evaluate, http_sink):
    rule_update(rule=check_rule, changes={"for_evaluations": 5}, actor=SYSTEM)
    checks.record("api", "http", "fail", "fail", "fail")
    evaluate()
    checks.record("api", "http", "pass")
    evaluate()
    assert Alert.objects.get().state == AlertState.RESOLVED
    assert http_sink.requests == [] and not Delivery.objects.exists()


def test_webhook_receives_the_alert_document(alerts_on, checks, evaluate, http_sink):
    hook = channel_create(
        data={"name": "pager", "kind": "webhook", "url": f"http://127.0.0.1:{http_sink.port}/hook?key=abc"},
        actor=SYSTEM,
    )
    rule = rule_create(
        data={
            "name": "search down",
            "kind": "check_status",
            "component": "search",
            "measurement": "http",
            "threshold": 2,
            "severity": "warning",
            "channels": [hook],
        },
        actor=SYSTEM,
    )
    AlertRule.objects.exclude(pk=rule.pk).update(enabled=False)
    checks.record("search", "http", "fail", "fail")
    evaluate()
    [received] = http_sink.requests
    assert received.headers["Content-Type"] == "application/json"
    document = json.loads(received.body)
    alert = Alert.objects.get()
    assert document["alert"] == "search down"
    assert document["state"] == "firing" and document["event"] == "firing"
    assert document["severity"] == "warning"
    assert (document["value"], document["threshold"]) == (2.0, 2.0)
    assert document["rule"]["name"] == "search down" and document["rule"]["kind"] == "check_status"
    assert document["component"] == "search" and document["measurement"] == "http"
    assert document["started_at"] == alert.started_at.isoformat()
    assert document["fired_at"] == alert.fired_at.isoformat() and document["resolved_at"] is None
    assert document["dedup_key"] == alert.dedup_key == f"rule:{rule.pk}:search:http"


def test_no_second_notification_within_the_repeat_interval(alerts_on, check_rule, checks, evaluate, http_sink):
    rule_update(rule=check_rule, changes={"repeat_interval_minutes": 60}, actor=SYSTEM)
    checks.record("postgres", "connection", "fail", "fail", "fail")
    evaluate()
    evaluate()  # still firing a minute later: nothing new
    assert len(http_sink.requests) == 1

    # It flaps: the resolution is announced, the second firing within the hour is not.
    checks.record("postgres", "connection", "pass")
    evaluate()
    checks.record("postgres", "connection", "fail", "fail", "fail")
    evaluate()
    assert [t.split("]")[0] for t in slack_texts(http_sink)] == ["[FIRING critical", "[RESOLVED critical"]
    assert Alert.objects.filter(state=AlertState.FIRING).count() == 1
    assert Alert.objects.count() == 2

    # Still firing once the interval has passed: announced again.
    evaluate(now=timezone.now() + timedelta(minutes=61))
    assert len(http_sink.requests) == 3
    assert slack_texts(http_sink)[2].startswith("[FIRING critical]")


def test_an_acknowledged_alert_is_not_repeated_and_the_acknowledgement_is_audited(
    alerts_on, check_rule, checks, evaluate, http_sink, operator
):
    checks.record("postgres", "connection", "fail", "fail", "fail")
    evaluate()
    alert = alert_acknowledge(alert=Alert.objects.get(), actor=Actor.for_user(operator))
    assert alert.acknowledged_by == operator and alert.acknowledged_at is not None
    event = AuditEvent.objects.get(action="alert.acknowledge")
    assert event.actor_label == "operator" and event.object_id == str(alert.pk)
    assert event.before["acknowledged_at"] is None and event.after["acknowledged_by"] == operator.pk

    evaluate(now=timezone.now() + timedelta(hours=3))
    assert len(http_sink.requests) == 1  # no reminder
    checks.record("postgres", "connection", "pass")
    evaluate()
    assert len(http_sink.requests) == 2  # the resolution still goes out
    with pytest.raises(InvalidAlertSetting, match="resolved"):
        alert_acknowledge(alert=alert, actor=Actor.for_user(operator))


def test_a_silence_records_the_alert_and_sends_nothing(alerts_on, check_rule, checks, evaluate, http_sink, operator):
    silence = silence_create(
        ends_at=timezone.now() + timedelta(hours=1),
        rule=check_rule,
        component="postgres",
        reason="database upgrade",
        actor=Actor.for_user(operator),
    )
    assert AuditEvent.objects.filter(action="silence.create", object_id=str(silence.pk)).exists()
    checks.record("postgres", "connection", "fail", "fail", "fail")
    checks.record("redis", "connection", "fail", "fail", "fail")  # not silenced
    evaluate()
    postgres = Alert.objects.get(component="postgres")
    assert postgres.state == AlertState.FIRING and postgres.last_notified_at is None
    [skipped] = Delivery.objects.filter(alert=postgres)
    assert skipped.status == DeliveryStatus.SKIPPED and "database upgrade" in skipped.last_error
    assert [t.split(":")[0] for t in slack_texts(http_sink)] == [
        "[FIRING critical] any check failing 3 times running redis"
    ]

    evaluate()  # reminders are not recorded while silenced
    assert Delivery.objects.filter(alert=postgres).count() == 1
    Silence.objects.filter(pk=silence.pk).update(ends_at=timezone.now())
    evaluate()  # the window is over and it still fails: now it is announced
    assert any("postgres" in text for text in slack_texts(http_sink))


def test_with_external_alerts_off_alerts_are_recorded_and_nothing_is_sent(
    check_rule, checks, evaluate, http_sink, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        flag_create(data={"name": "external_alerts", "enabled": False}, actor=SYSTEM)
    checks.record("postgres", "connection", "fail", "fail", "fail")
    evaluate()
    alert = Alert.objects.get()
    assert alert.state == AlertState.FIRING
    [delivery] = Delivery.objects.all()
    assert (delivery.status, delivery.last_error) == ("skipped", "external_alerts is off")
    assert http_sink.requests == []

    with django_capture_on_commit_callbacks(execute=True):
        flag_update(name="external_alerts", changes={"enabled": True, "rollout_percent": 100}, actor=SYSTEM)
    evaluate()  # back on, still firing and never announced: announced now
    assert len(http_sink.requests) == 1


def seed_requests(minutes_ago: int, *, count: int, errors: int, bucket: str) -> None:
    assert bucket in BUCKET_FIELDS
    minute = (timezone.now() - timedelta(minutes=minutes_ago)).replace(second=0, microsecond=0)
    RequestRollup.objects.create(
        minute=minute, view="api:matches", method="GET", status_class="2xx", count=count, errors=errors,
        **{bucket: count},
    )  # fmt: skip


def test_p95_and_error_rate_rules_fire_on_the_request_rollups(alerts_on, slack, evaluate, http_sink):
    for rule in AlertRule.objects.filter(kind__in=["p95_latency_ms", "error_rate"]):
        rule_update(rule=rule, changes={"channels": [slack]}, actor=SYSTEM)
    seed_requests(2, count=100, errors=0, bucket="le_1000")
    evaluate()
    assert not Alert.objects.exists()  # p95 of 950 ms, no errors

    seed_requests(1, count=300, errors=12, bucket="le_5000")
    seed_requests(30, count=1000, errors=1000, bucket="le_inf")  # outside the 5 minute window
    # "for 5 minutes": the shipped rules hold for 5 evaluations (one a minute) before they fire.
    for _ in range(4):
        evaluate()
        assert set(Alert.objects.values_list("state", flat=True)) == {AlertState.PENDING}
        assert not http_sink.requests
    evaluate()
    p95 = Alert.objects.get(rule__name="p95 latency over 2000 ms")
    errors = Alert.objects.get(rule__name="error rate over 1 %")
    assert p95.state == errors.state == AlertState.FIRING
    assert p95.last_value > 2000
    assert errors.last_value == pytest.approx(3.0)  # 12 of 400
    texts = sorted(slack_texts(http_sink))
    assert texts[0].startswith("[FIRING critical] error rate over 1 %: 3 % (threshold 1 %)")
    assert texts[1].startswith("[FIRING warning] p95 latency over 2000 ms:")


def test_no_request_data_and_a_new_backup_target_fire_nothing(alerts_on, evaluate):
    # The target "default" was made with the database: younger than 26 h, and nothing of it failed.
    summary = evaluate()
    assert summary.rules == 10 and summary.errors == []  # the shipped rules: job-down, restore drill, two SLO burns too
    assert not Alert.objects.exists()


def test_disabling_a_rule_closes_its_alerts_quietly(alerts_on, check_rule, checks, evaluate, http_sink):
    checks.record("postgres", "connection", "fail", "fail", "fail")
    evaluate()
    rule_update(rule=check_rule, changes={"enabled": False}, actor=SYSTEM)
    evaluate()
    assert Alert.objects.get().state == AlertState.RESOLVED
    assert len(http_sink.requests) == 1


def test_one_open_alert_per_dedup_key_is_a_database_rule(check_rule):
    Alert.objects.create(rule=check_rule, dedup_key="k", state=AlertState.FIRING)
    with pytest.raises(IntegrityError), transaction.atomic():
        Alert.objects.create(rule=check_rule, dedup_key="k", state=AlertState.PENDING)
    Alert.objects.filter(dedup_key="k").update(state=AlertState.RESOLVED)
    Alert.objects.create(rule=check_rule, dedup_key="k", state=AlertState.PENDING)  # a new occurrence


@pytest.mark.parametrize(
    "url", ["ftp://hooks.example.com/x", "file:///etc/passwd", "javascript:alert(1)", "hooks.slack.com/services/x", ""]
)
def test_a_channel_url_that_is_not_http_is_refused_and_nothing_saved(url):
    with pytest.raises(InvalidAlertSetting) as refused:
        channel_create(data={"name": "bad", "kind": "slack", "url": url}, actor=SYSTEM)
    assert refused.value.field == "url"
    assert "http" in refused.value.message or "required" in refused.value.message
    assert not NotificationChannel.objects.exists()
    assert not AuditEvent.objects.filter(action="notificationchannel.create").exists()
    with pytest.raises(ValidationError) as invalid:
        NotificationChannel(name="bad", kind="webhook", url=url).save()  # the model refuses too
    assert "url" in invalid.value.message_dict
    assert not NotificationChannel.objects.exists()


def test_channel_update_refuses_a_bad_url_and_keeps_the_old_one(slack):
    with pytest.raises(InvalidAlertSetting, match="url: only http"):
        channel_update(channel=slack, changes={"url": "gopher://x/y"}, actor=SYSTEM)
    slack.refresh_from_db()
    assert slack.url.endswith(SECRET_PATH)


def test_an_email_channel_needs_recipients():
    with pytest.raises(InvalidAlertSetting) as refused:
        channel_create(data={"name": "mail", "kind": "email", "email_recipients": ["not-an-address"]}, actor=SYSTEM)
    assert refused.value.field == "email_recipients"
    channel = channel_create(
        data={"name": "mail", "kind": "email", "email_recipients": ["ops@example.test"]}, actor=SYSTEM
    )
    assert channel.target == "ops@example.test"


def test_the_webhook_url_never_reaches_the_audit_trail(slack, http_sink):
    channel_update(channel=slack, changes={"url": "https://hooks.slack.com/services/T1/B1/anotherSecret"}, actor=SYSTEM)
    events = AuditEvent.objects.filter(object_type="alerting.notificationchannel").order_by("time")
    assert [e.action for e in events] == ["notificationchannel.create", "notificationchannel.update"]
    dumped = json.dumps([[e.before, e.after] for e in events])
    assert "XyZsecretWebhookPart" not in dumped and "anotherSecret" not in dumped
    update = events[1]
    assert update.before["url"].startswith("http://127.0.0.1/") and update.after["url"].startswith(
        "https://hooks.slack.com/"
    )
    assert update.before["url"] != update.after["url"]  # the fingerprint shows that it changed


def test_rules_are_validated_and_audited():
    with pytest.raises(InvalidAlertSetting) as refused:
        rule_create(data={"name": "x", "kind": "check_status", "component": "*", "threshold": 2.5}, actor=SYSTEM)
    assert refused.value.field == "threshold"
    with pytest.raises(InvalidAlertSetting) as refused:
        rule_create(
            data={"name": "y", "kind": "check_latency_ms", "measurement": "responseTime", "threshold": 100},
            actor=SYSTEM,
        )
    assert refused.value.field == "component"
    with pytest.raises(InvalidAlertSetting) as refused:
        rule_create(data={"name": CHECK_RULE, "kind": "error_rate", "threshold": 5}, actor=SYSTEM)
    assert refused.value.field == "name"
    rule_create(data={"name": "slow api", "kind": "p95_latency_ms", "threshold": 800}, actor=SYSTEM)
    assert AuditEvent.objects.get(action="alertrule.create").after["threshold"] == 800


def test_a_silence_must_end_after_it_starts(check_rule):
    now = timezone.now()
    with pytest.raises(InvalidAlertSetting) as refused:
        silence_create(starts_at=now + timedelta(hours=2), ends_at=now + timedelta(hours=1), reason="x", actor=SYSTEM)
    assert refused.value.field == "ends_at"
    with pytest.raises(InvalidAlertSetting) as refused:
        silence_create(ends_at=now + timedelta(hours=1), reason=" ", actor=SYSTEM)
    assert refused.value.field == "reason"
    assert not Silence.objects.exists()


def test_the_tasks_are_registered_under_their_names_and_the_names_they_had_in_monitoring(alerts_on):
    """A message queued before the upgrade names monitoring.*: a worker of this version still runs it."""
    from alerting.tasks import deliver_notification, evaluate_alert_rules
    from controlplane.celery import app

    assert evaluate_alert_rules.name == "alerting.evaluate_alert_rules"
    assert deliver_notification.name == "alerting.deliver_notification"
    app.loader.import_default_modules()  # what a worker does at start: autodiscovery of the apps' tasks
    for name in ("alerting.evaluate_alert_rules", "monitoring.evaluate_alert_rules"):
        assert app.tasks[name]()["rules"] == 10
    queued_before = app.tasks["monitoring.deliver_notification"]
    assert (queued_before.max_retries, queued_before.soft_time_limit) == (deliver_notification.max_retries, 60)


def test_a_check_latency_rule_compares_the_latest_stored_value(alerts_on, slack, evaluate, http_sink):
    rule = rule_create(
        data={
            "name": "slow database", "kind": "check_latency_ms", "component": "database",
            "measurement": "responseTime", "threshold": 250, "channels": [slack],
        },
        actor=SYSTEM,
    )  # fmt: skip
    HealthMetric.objects.create(component="database", measurement="responseTime", status="pass", value=80, unit="ms")
    evaluate()
    assert not Alert.objects.filter(rule=rule).exists()
    HealthMetric.objects.create(component="database", measurement="responseTime", status="warn", value=900, unit="ms")
    evaluate()
    alert = Alert.objects.get(rule=rule)
    assert (alert.state, alert.last_value) == (AlertState.FIRING, 900)
    assert slack_texts(http_sink)[0].startswith("[FIRING warning] slow database database:responseTime: 900 ms")
