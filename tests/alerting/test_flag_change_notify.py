"""A flag change announced to the channels chosen for its environment (flag, environment, before -> after,
who), through the ground's signal: flags does not import alerting, nor alerting flags' services."""

from __future__ import annotations

import json
import re

import pytest

from alerting.models import Delivery
from alerting.services import InvalidAlertSetting, channel_create
from controlplane.audit import Actor
from flags.services import flag_change, flag_create, flag_state_set, flag_update

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("eager_tasks")]
SYSTEM = Actor.system("tests")


@pytest.fixture
def slack(http_sink, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        flag_create(data={"name": "external_alerts", "enabled": True, "rollout_percent": 100}, actor=SYSTEM)
        flag_create(data={"name": "chat", "enabled": False, "rollout_percent": 25}, actor=SYSTEM)
    return channel_create(
        data={
            "name": "ops-slack",
            "kind": "slack",
            "url": f"http://127.0.0.1:{http_sink.port}/services/T0/B0/x",
            "flag_change_environments": ["production", "staging"],
        },
        actor=SYSTEM,
    )


def test_a_toggle_in_a_chosen_environment_reaches_slack(slack, http_sink, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        flag_change(name="chat", changes={"enabled": True}, actor=Actor.system("alice"))
    [received] = http_sink.requests
    text = json.loads(received.body)["text"]
    assert "Flag chat in production: off → on for 25 % (by alice)" in text
    assert Delivery.objects.get().status == "sent"


def test_a_rollout_and_a_strategy_change_say_before_and_after(slack, http_sink, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        flag_change(name="chat", changes={"enabled": True}, actor=SYSTEM)
        flag_change(name="chat", changes={"rollout_percent": 50}, actor=SYSTEM)
        flag_state_set(
            name="chat",
            environment="staging",
            state={"enabled": True, "strategies": [{"kind": "default"}, {"kind": "userWithId", "user_ids": ["a"]}]},
            actor=SYSTEM,
        )
    texts = [json.loads(r.body)["text"] for r in http_sink.requests]
    assert "on for 25 % → on for 50 %" in texts[1]
    assert "Flag chat in staging: off → on by 2 strategies" in texts[2]


def test_development_and_unchosen_environments_stay_quiet(slack, http_sink, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        flag_change(name="chat", changes={"enabled": True}, actor=SYSTEM, environment="development")
        flag_update(name="chat", changes={"owner": "growth"}, actor=SYSTEM)  # not a change of state
    assert http_sink.requests == [] and not Delivery.objects.exists()


def test_a_rolled_back_change_announces_nothing(slack, http_sink, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as queued:
        flag_change(name="chat", changes={"enabled": True}, actor=SYSTEM)
    assert queued  # the announcement waits for the commit, which a test's rollback never gives it
    assert http_sink.requests == [] and not Delivery.objects.exists()


def test_an_unknown_environment_is_refused(db):
    with pytest.raises(InvalidAlertSetting) as refused:
        channel_create(
            data={"name": "x", "kind": "webhook", "url": "http://127.0.0.1:9/x", "flag_change_environments": ["prod"]},
            actor=SYSTEM,
        )
    assert refused.value.field == "flag_change_environments" and "prod" in refused.value.message


def test_a_new_channel_in_admin_hears_every_environment_but_development(operator_client):
    page = operator_client.get("/admin/alerting/notificationchannel/add/").content.decode()
    boxes = {
        value: attributes
        for attributes_before, value, attributes in re.findall(r'<input ([^>]*)value="([^"]+)"([^>]*)>', page)
        if 'name="flag_change_environments"' in attributes_before + attributes
    }
    assert set(boxes) >= {"development", "staging", "production"}, boxes
    assert "checked" in boxes["production"] and "checked" in boxes["staging"]
    assert "checked" not in boxes["development"]
