"""Turning a flag off asks first (without JavaScript); the flag's history says what changed in words;
the admin's rollout action refuses a bad percent by saying so, the flags still selected."""

from __future__ import annotations

import re

import pytest

from controlplane.audit import Actor
from controlplane.models import AuditEvent
from flags.models import Flag
from flags.services import flag_create, flag_update

pytestmark = pytest.mark.django_db
SYSTEM = Actor.system("tests")


@pytest.fixture
def chat(db):
    return flag_create(data={"name": "chat", "enabled": True, "rollout_percent": 25}, actor=SYSTEM)


def test_turning_off_without_confirm_changes_nothing_and_names_the_flag_and_its_reach(operator_client, chat):
    for data in ({}, {"enabled": "0"}, {"enabled": "0", "confirm": "no"}, {"next": "detail"}):
        response = operator_client.post("/flags/chat/toggle", data)
        assert response.status_code == 200, data
        html = response.content.decode()
        assert "Turn off flag chat in production?" in html
        assert "chat is now on for 25 % of users." in html
        assert '<input type="hidden" name="confirm" value="yes">' in html
        assert '<input type="hidden" name="enabled" value="0">' in html
        chat.refresh_from_db()
        assert chat.enabled is True, data
    assert not AuditEvent.objects.filter(action="flag.toggle").exists()
    back = operator_client.post("/flags/chat/toggle", {"next": "detail"}).content.decode()
    assert '<a href="/flags/chat/">Back, change nothing</a>' in back


def test_confirming_turns_it_off_and_returns_where_it_came_from(operator_client, chat):
    response = operator_client.post("/flags/chat/toggle", {"enabled": "0", "confirm": "yes", "next": "detail"})
    assert response.status_code == 302 and response["Location"] == "/flags/chat/"
    chat.refresh_from_db()
    assert chat.enabled is False
    assert AuditEvent.objects.get(action="flag.toggle").actor_label == "operator"


def test_a_confirmation_sets_off_and_never_flips_a_flag_someone_else_turned_off(operator_client, chat):
    flag_update(name="chat", changes={"enabled": False}, actor=SYSTEM)  # another operator, meanwhile
    operator_client.post("/flags/chat/toggle", {"enabled": "0", "confirm": "yes"})
    chat.refresh_from_db()
    assert chat.enabled is False


def test_outside_production_nothing_asks(operator_client):
    flag_create(data={"name": "digest", "enabled": False, "rollout_percent": 100}, actor=SYSTEM)
    page = operator_client.get("/flags/").content.decode()
    assert '<input type="hidden" name="enabled" value="1">' in page
    for enabled in ("1", "0"):
        response = operator_client.post("/flags/digest/toggle", {"enabled": enabled, "environment": "staging"})
        assert response.status_code == 302
        assert Flag.objects.get(name="digest").state("staging").enabled is (enabled == "1")
    assert Flag.objects.get(name="digest").enabled is False  # production untouched


def test_the_history_says_what_changed_in_words(operator_client, chat):
    flag_update(name="chat", changes={"rollout_percent": 40, "targeting_keys": ["bob"]}, actor=SYSTEM)
    flag_update(name="chat", changes={"targeting_keys": ["vip"]}, actor=SYSTEM)
    operator_client.post("/flags/chat/toggle", {"confirm": "yes"})
    html = operator_client.get("/flags/chat/").content.decode()
    cells = re.findall(r'<td class="change">(.*?)</td>', html)
    assert cells == [
        "turned off",
        "targeting keys: added vip; removed bob",
        "rollout 25 % → 40 %; targeting keys: added bob",
        "created (on, rollout 25 %)",
    ]
    assert "{&#x27;" not in html and "{'" not in html  # no dict dumps
    admin = operator_client.get(f"/admin/flags/flag/{chat.pk}/change/").content.decode()
    assert "<td>turned off</td>" in admin and "{&#x27;" not in admin


def test_admin_rollout_action_refuses_a_bad_percent_by_name_and_keeps_the_selection(operator_client, chat):
    other = flag_create(data={"name": "digest", "rollout_percent": 5}, actor=SYSTEM)
    url = "/admin/flags/flag/"
    for bad in ("150", "-1", "abc", "", "12.5"):
        response = operator_client.post(
            url, {"action": "set_rollout", "_selected_action": [chat.pk, other.pk], "rollout_percent": bad}
        )
        assert response.status_code == 200, bad
        html = response.content.decode()
        assert "The rollout percent must be a whole number from 0 to 100" in html, bad
        assert "No action selected" not in html
        for flag in (chat, other):
            assert f'<input type="hidden" name="_selected_action" value="{flag.pk}">' in html
        assert "chat (now 25 %)" in html and "digest (now 5 %)" in html
    assert (
        "(got &#x27;150&#x27;)"
        in operator_client.post(
            url, {"action": "set_rollout", "_selected_action": [chat.pk], "rollout_percent": "150"}
        ).content.decode()
    )
    assert sorted(flag.rollout_percent for flag in Flag.objects.all()) == [5, 25]
    # The page's form, corrected, asks (production) and, confirmed, sets both.
    corrected = {"action": "set_rollout", "_selected_action": [chat.pk, other.pk], "rollout_percent": "60"}
    asked = operator_client.post(url, corrected)
    assert asked.status_code == 200 and "Set the rollout to 60 % on these 2 flags there?" in asked.content.decode()
    assert sorted(flag.rollout_percent for flag in Flag.objects.all()) == [5, 25]
    response = operator_client.post(url, {**corrected, "environment": "production", "confirm": "yes"})
    assert response.status_code == 302
    assert [flag.rollout_percent for flag in Flag.objects.all()] == [60, 60]
