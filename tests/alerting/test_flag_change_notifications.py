"""A flag change tells the channels chosen for its environment: flag, environment, before -> after, who."""

from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest
from django.utils import timezone

from alerting.models import Delivery, NotificationChannel
from alerting.services import InvalidAlertSetting, channel_create, channel_update
from controlplane.audit import Actor
from controlplane.models import Environment
from flags.schedules import apply_due, schedule_change
from flags.services import flag_create, flag_toggle, flag_update

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("eager_tasks")]
SYSTEM = Actor.system("tests")


@pytest.fixture
def slack(http_sink, alerts_on):
    url = f"http://127.0.0.1:{http_sink.port}/services/T/B/flags"
    return channel_create(data={"name": "flags-slack", "kind": "slack", "url": url}, actor=SYSTEM)


@pytest.fixture
def chat(db, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        return flag_create(data={"name": "chat", "enabled": True, "rollout_percent": 30}, actor=SYSTEM)


def _texts(http_sink) -> list[str]:
    return [json.loads(r.body)["text"] for r in http_sink.requests]


def test_a_new_channel_hears_every_environment_but_development(slack):
    others = sorted(Environment.objects.exclude(name="development").values_list("name", flat=True))
    assert {"staging", "production"} <= set(others)
    assert slack.flag_change_environments == others


def test_an_operators_change_in_production_reaches_slack_naming_all_of_it(
    slack, chat, http_sink, django_capture_on_commit_callbacks
):
    http_sink.requests.clear()
    alice = Actor.system("alice")
    with django_capture_on_commit_callbacks(execute=True):
        flag_update(name="chat", changes={"rollout_percent": 60}, actor=alice)
    [text] = _texts(http_sink)
    assert "Flag chat in production: on for 30 % of users -> on for 60 % of users (by alice)" in text
    assert Delivery.objects.filter(payload__kind="flag").count() == 1


def test_development_is_quiet_by_default_and_a_channel_can_choose(
    slack, chat, http_sink, django_capture_on_commit_callbacks
):
    http_sink.requests.clear()
    with django_capture_on_commit_callbacks(execute=True):
        flag_toggle(name="chat", changes={"enabled": True}, actor=SYSTEM, environment="development")
    assert _texts(http_sink) == []
    channel_update(channel=slack, changes={"flag_change_environments": ["development"]}, actor=SYSTEM)
    with django_capture_on_commit_callbacks(execute=True):
        flag_toggle(name="chat", changes={"enabled": False}, actor=SYSTEM, environment="development")
        flag_toggle(name="chat", changes={"enabled": False}, actor=SYSTEM, environment="production")
    [text] = _texts(http_sink)
    assert "Flag chat in development: on for 30 % of users -> off" in text


def test_a_change_rolled_back_tells_nobody(slack, chat, http_sink, django_capture_on_commit_callbacks):
    http_sink.requests.clear()
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        try:
            from django.db import transaction

            with transaction.atomic():
                flag_update(name="chat", changes={"rollout_percent": 90}, actor=SYSTEM)
                raise RuntimeError("the caller failed after the change")
        except RuntimeError:
            pass
    assert callbacks == [] and _texts(http_sink) == []


def test_a_scheduled_change_is_told_as_the_schedules(slack, chat, http_sink, django_capture_on_commit_callbacks):
    now = timezone.now()
    schedule_change(
        name="chat", environment="production", at=now + timedelta(minutes=5), kind="disable", actor=Actor.system("bob")
    )
    http_sink.requests.clear()
    with django_capture_on_commit_callbacks(execute=True):
        apply_due(now=now + timedelta(minutes=6))
    [text] = _texts(http_sink)
    assert "-> off (by schedule on behalf of bob)" in text


def test_an_unknown_environment_is_refused_and_nothing_changes(slack):
    with pytest.raises(InvalidAlertSetting, match="no environment named mars"):
        channel_update(channel=slack, changes={"flag_change_environments": ["production", "mars"]}, actor=SYSTEM)
    assert "mars" not in NotificationChannel.objects.get(pk=slack.pk).flag_change_environments


def test_the_channel_admin_offers_the_environments_with_development_unchecked(operator_client):
    page = operator_client.get("/admin/alerting/notificationchannel/add/").content.decode()
    boxes = dict(re.findall(r'<input type="checkbox" name="flag_change_environments" value="(\w+)"([^>]*)>', page))
    assert "checked" in boxes["production"] and "checked" in boxes["staging"]
    assert "checked" not in boxes["development"]
