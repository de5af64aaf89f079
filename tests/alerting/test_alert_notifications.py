"""Delivering notifications: retries with backoff on transient failures, the log, e-mail, test sends."""

from __future__ import annotations

import json
import socket

import pytest
from django.core import mail

from alerting.models import Alert, AlertRule, AlertState, Delivery, DeliveryStatus
from alerting.services import alert_rules_evaluate, channel_create, channel_send_test, delivery_attempt, rule_update
from alerting.tasks import MAX_DELIVERY_RETRIES, backoff_seconds, deliver_notification
from controlplane.audit import Actor
from controlplane.models import AuditEvent
from flags.services import flag_update
from monitoring.models import HealthMetric

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("eager_tasks")]
SYSTEM = Actor.system("tests")


def channel(kind: str, url: str = "", recipients: list[str] | None = None):
    data = {"name": f"{kind}-channel", "kind": kind}
    data.update({"url": url} if url else {"email_recipients": recipients or []})
    return channel_create(data=data, actor=SYSTEM)


def firing_delivery(ch, django_capture_on_commit_callbacks) -> Delivery:
    """A check fails three times; the firing notification is queued but not yet attempted."""
    rule = AlertRule.objects.get(name="any check failing 3 times running")
    rule_update(rule=rule, changes={"channels": [ch]}, actor=SYSTEM)
    for _ in range(3):
        HealthMetric.objects.create(component="postgres", measurement="connection", status="fail")
    with django_capture_on_commit_callbacks(execute=False) as queued:
        alert_rules_evaluate()
    assert len(queued) == 2  # one send and the alert_fired signal (alerting.signals), both for after commit
    return Delivery.objects.get()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_slack_answering_500_is_retried_with_every_attempt_recorded(
    alerts_on, http_sink, django_capture_on_commit_callbacks
):
    slack = channel("slack", f"http://127.0.0.1:{http_sink.port}/services/T/B/secret")
    delivery = firing_delivery(slack, django_capture_on_commit_callbacks)
    http_sink.status = 500

    deliver_notification.apply(args=[delivery.pk])  # the worker's path, retries run at once

    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.FAILED
    assert delivery.attempts == MAX_DELIVERY_RETRIES + 1 == len(http_sink.requests)
    assert delivery.response_status == 500 and delivery.last_error.startswith("HTTP 500")
    assert "secret" not in delivery.last_error
    alert = Alert.objects.get()
    assert alert.state == AlertState.FIRING and alert.fired_at is not None  # the alert is untouched

    deliver_notification.apply(args=[delivery.pk])  # idempotent: a finished delivery is not sent again
    assert len(http_sink.requests) == MAX_DELIVERY_RETRIES + 1


def test_a_transient_failure_stays_pending_for_the_retry_which_then_succeeds(
    alerts_on, http_sink, django_capture_on_commit_callbacks
):
    hook = channel("webhook", f"http://127.0.0.1:{http_sink.port}/hook")
    delivery = firing_delivery(hook, django_capture_on_commit_callbacks)
    http_sink.status = 429
    outcome = delivery_attempt(delivery_id=delivery.pk, final=False)
    assert outcome.retry is True
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.response_status) == ("pending", 1, 429)

    http_sink.status = 200
    assert delivery_attempt(delivery_id=delivery.pk, final=False).retry is False
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.response_status) == ("sent", 2, 200)
    assert delivery.last_error == "" and delivery.sent_at is not None
    assert [json.loads(r.body)["alert"] for r in http_sink.requests] == ["any check failing 3 times running"] * 2


def test_a_4xx_answer_fails_at_once_without_retries(alerts_on, http_sink, django_capture_on_commit_callbacks):
    hook = channel("webhook", f"http://127.0.0.1:{http_sink.port}/gone")
    delivery = firing_delivery(hook, django_capture_on_commit_callbacks)
    http_sink.status = 404
    deliver_notification.apply(args=[delivery.pk])
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.response_status) == ("failed", 1, 404)
    assert len(http_sink.requests) == 1


def test_a_refused_connection_is_transient(alerts_on, django_capture_on_commit_callbacks):
    hook = channel("webhook", f"http://127.0.0.1:{closed_port()}/hook")
    delivery = firing_delivery(hook, django_capture_on_commit_callbacks)
    assert delivery_attempt(delivery_id=delivery.pk, final=False).retry is True
    delivery.refresh_from_db()
    assert delivery.status == "pending" and delivery.last_error.startswith("connection failed")
    assert delivery_attempt(delivery_id=delivery.pk, final=True).retry is False
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("failed", 2)


def test_backoff_doubles_up_to_a_ceiling():
    assert [backoff_seconds(n) for n in range(7)] == [30, 60, 120, 240, 480, 600, 600]


def test_e_mail_notifications_go_through_send_mail(alerts_on, django_capture_on_commit_callbacks):
    email = channel("email", recipients=["ops@example.test", "oncall@example.test"])
    delivery = firing_delivery(email, django_capture_on_commit_callbacks)
    deliver_notification.apply(args=[delivery.pk])
    [message] = mail.outbox
    assert message.to == ["ops@example.test", "oncall@example.test"]
    assert message.subject.startswith("[FIRING critical] any check failing 3 times running postgres:connection")
    assert "dedup key: rule:" in message.body
    delivery.refresh_from_db()
    assert delivery.status == "sent"


def test_turning_external_alerts_off_stops_queued_notifications(
    alerts_on, http_sink, django_capture_on_commit_callbacks
):
    slack = channel("slack", f"http://127.0.0.1:{http_sink.port}/services/x")
    delivery = firing_delivery(slack, django_capture_on_commit_callbacks)
    with django_capture_on_commit_callbacks(execute=True):
        flag_update(name="external_alerts", changes={"enabled": False}, actor=SYSTEM)
    deliver_notification.apply(args=[delivery.pk])
    delivery.refresh_from_db()
    assert (delivery.status, delivery.last_error) == ("skipped", "external_alerts is off")
    assert http_sink.requests == []


def test_send_a_test_notification(alerts_on, http_sink, django_capture_on_commit_callbacks, operator):
    slack = channel("slack", f"http://127.0.0.1:{http_sink.port}/services/x")
    with django_capture_on_commit_callbacks(execute=True):
        delivery = channel_send_test(channel=slack, actor=Actor.for_user(operator))
    delivery.refresh_from_db()
    assert (delivery.event, delivery.status, delivery.alert) == ("test", "sent", None)
    [received] = http_sink.requests
    assert json.loads(received.body) == {
        "text": f"Test notification from the control plane: this channel works.\n\ndedup key: test:{slack.pk}"
    }
    assert AuditEvent.objects.filter(action="notificationchannel.test", actor_label="operator").exists()


def test_a_test_notification_with_external_alerts_off_is_recorded_as_skipped(
    http_sink, django_capture_on_commit_callbacks
):
    slack = channel("slack", f"http://127.0.0.1:{http_sink.port}/services/x")
    with django_capture_on_commit_callbacks(execute=True):
        delivery = channel_send_test(channel=slack, actor=SYSTEM)
    assert delivery.status == "skipped" and http_sink.requests == []
