"""Alerting in Django admin: writes go through the services and are audited; secrets stay hidden."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from alerting.models import Alert, AlertRule, AlertState, Delivery, NotificationChannel, Silence
from alerting.services import channel_create
from controlplane.audit import Actor
from controlplane.models import AuditEvent
from flags.services import flag_create

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("eager_tasks")]
SYSTEM = Actor.system("tests")
SECRET = "T0001/B0001/adminSecretPart"


@pytest.fixture
def slack(http_sink):
    return channel_create(
        data={"name": "ops-slack", "kind": "slack", "url": f"http://127.0.0.1:{http_sink.port}/services/{SECRET}"},
        actor=SYSTEM,
    )


def test_add_a_channel_refuses_a_non_http_url_and_saves_nothing(operator_client):
    response = operator_client.post(
        "/admin/alerting/notificationchannel/add/",
        {"name": "ops", "kind": "slack", "url": "ftp://hooks.example.com/x", "email_recipients": "", "enabled": "on"},
    )
    assert response.status_code == 200
    assert "only http:// and https:// URLs are accepted" in response.content.decode()
    assert not NotificationChannel.objects.exists()


def test_add_and_edit_a_channel_through_the_service_without_showing_the_url(operator_client):
    url = f"https://hooks.slack.com/services/{SECRET}"
    response = operator_client.post(
        "/admin/alerting/notificationchannel/add/",
        {"name": "ops", "kind": "slack", "url": url, "email_recipients": "", "enabled": "on"},
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    channel = NotificationChannel.objects.get()
    assert channel.url == url
    create = AuditEvent.objects.get(action="notificationchannel.create")
    assert create.actor_label == "operator" and SECRET not in json.dumps(create.after)

    listing = operator_client.get("/admin/alerting/notificationchannel/").content.decode()
    assert "ops" in listing and "hooks.slack.com" in listing and SECRET not in listing
    form = operator_client.get(f"/admin/alerting/notificationchannel/{channel.pk}/change/").content.decode()
    assert SECRET not in form

    # Left empty on change, the URL is kept.
    response = operator_client.post(
        f"/admin/alerting/notificationchannel/{channel.pk}/change/",
        {"name": "ops-renamed", "kind": "slack", "url": "", "email_recipients": "", "enabled": "on"},
    )
    assert response.status_code == 302
    channel.refresh_from_db()
    assert (channel.name, channel.url) == ("ops-renamed", url)
    update = AuditEvent.objects.get(action="notificationchannel.update")
    assert update.before["name"] == "ops" and update.after["name"] == "ops-renamed"


def test_send_a_test_notification_action(operator_client, slack, http_sink, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        flag_create(data={"name": "external_alerts", "enabled": True, "rollout_percent": 100}, actor=SYSTEM)
    with django_capture_on_commit_callbacks(execute=True):
        response = operator_client.post(
            "/admin/alerting/notificationchannel/",
            {"action": "send_test", "_selected_action": [slack.pk]},
            follow=True,
        )
    assert "test notification queued" in response.content.decode()
    [received] = http_sink.requests
    assert json.loads(received.body)["text"].startswith("Test notification")
    assert Delivery.objects.get().status == "sent"


def test_rule_add_through_the_service_with_channels_and_bad_values_refused(operator_client, slack):
    base = {
        "name": "slow search", "kind": "check_latency_ms", "component": "search", "measurement": "responseTime",
        "threshold": "1500", "window_minutes": "5", "for_evaluations": "3", "severity": "warning",
        "repeat_interval_minutes": "30", "enabled": "on", "description": "", "channels": [slack.pk],
    }  # fmt: skip
    refused = operator_client.post("/admin/alerting/alertrule/add/", {**base, "component": ""})
    assert refused.status_code == 200 and "a check rule needs a component" in refused.content.decode()
    refused = operator_client.post("/admin/alerting/alertrule/add/", {**base, "measurement": ""})
    assert refused.status_code == 200 and "a latency rule needs the measurement" in refused.content.decode()
    response = operator_client.post("/admin/alerting/alertrule/add/", base)
    assert response.status_code == 302, response.content.decode()[:2000]
    rule = AlertRule.objects.get(name="slow search")
    assert list(rule.channels.all()) == [slack] and rule.for_evaluations == 3
    event = AuditEvent.objects.get(action="alertrule.create")
    assert event.actor_label == "operator" and event.after["channels"] == [slack.pk]


def test_acknowledge_action_is_audited(operator_client, operator):
    rule = AlertRule.objects.get(name="any check failing 3 times running")
    alert = Alert.objects.create(rule=rule, dedup_key="k", state=AlertState.FIRING, fired_at=timezone.now())
    page = operator_client.get("/admin/alerting/alert/").content.decode()
    assert "Acknowledge the selected alerts" in page
    response = operator_client.post(
        "/admin/alerting/alert/", {"action": "acknowledge", "_selected_action": [alert.pk]}, follow=True
    )
    assert "Acknowledged 1 alert(s)." in response.content.decode()
    alert.refresh_from_db()
    assert alert.acknowledged_by == operator
    assert AuditEvent.objects.filter(action="alert.acknowledge", actor_label="operator").count() == 1
    # Read-only otherwise.
    assert operator_client.get("/admin/alerting/alert/add/").status_code == 403
    assert operator_client.post(f"/admin/alerting/alert/{alert.pk}/delete/").status_code == 403


def test_silence_add_and_end_now(operator_client, operator):
    now = timezone.localtime()
    later = now + timedelta(hours=2)
    response = operator_client.post(
        "/admin/alerting/silence/add/",
        {
            "starts_at_0": now.strftime("%Y-%m-%d"), "starts_at_1": now.strftime("%H:%M:%S"),
            "ends_at_0": later.strftime("%Y-%m-%d"), "ends_at_1": later.strftime("%H:%M:%S"),
            "rule": "", "component": "postgres", "reason": "database upgrade",
        },
    )  # fmt: skip
    assert response.status_code == 302, response.content.decode()[:3000]
    silence = Silence.objects.get()
    assert silence.created_by == operator and silence.component == "postgres"
    assert AuditEvent.objects.filter(action="silence.create", actor_label="operator").exists()

    operator_client.post("/admin/alerting/silence/", {"action": "end_now", "_selected_action": [silence.pk]})
    silence.refresh_from_db()
    assert silence.ends_at <= timezone.now()
    assert AuditEvent.objects.filter(action="silence.end").exists()


def test_delivery_log_is_read_only(operator_client, slack):
    Delivery.objects.create(channel=slack, event="test", status="sent", attempts=1, response_status=200)
    listing = operator_client.get("/admin/alerting/delivery/")
    assert listing.status_code == 200 and "ops-slack" in listing.content.decode()
    assert operator_client.get("/admin/alerting/delivery/add/").status_code == 403


def test_a_viewer_cannot_reach_alerting_admin(client, viewer):
    client.force_login(viewer)
    assert client.get("/admin/alerting/notificationchannel/").status_code in (302, 403)


def test_every_alerting_page_renders(operator_client, slack):
    rule = AlertRule.objects.get(name="any check failing 3 times running")
    alert = Alert.objects.create(rule=rule, dedup_key="k", component="db", measurement="x", state=AlertState.FIRING)
    delivery = Delivery.objects.create(
        alert=alert, channel=slack, event="firing", status="failed", last_error="HTTP 500"
    )
    silence = Silence.objects.create(ends_at=timezone.now() + timedelta(hours=1), reason="upgrade")
    for url in [
        "/admin/alerting/notificationchannel/add/",
        f"/admin/alerting/notificationchannel/{slack.pk}/change/",
        "/admin/alerting/alertrule/",
        "/admin/alerting/alertrule/add/",
        f"/admin/alerting/alertrule/{rule.pk}/change/",
        f"/admin/alerting/alert/{alert.pk}/change/",
        "/admin/alerting/silence/",
        "/admin/alerting/silence/add/",
        f"/admin/alerting/silence/{silence.pk}/change/",
        f"/admin/alerting/delivery/{delivery.pk}/change/",
    ]:
        response = operator_client.get(url)
        assert response.status_code == 200, url
        assert SECRET not in response.content.decode(), url
    detail = operator_client.get(f"/admin/alerting/alert/{alert.pk}/change/").content.decode()
    assert "HTTP 500" in detail  # its deliveries, inline
