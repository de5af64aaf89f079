"""Operator screens for flags: admin through the service, pages with a permission to change."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission

from controlplane.audit import Actor
from controlplane.models import AuditEvent
from flags.evaluation import bucket
from flags.models import Flag
from flags.services import flag_create

pytestmark = pytest.mark.django_db

# The flag form's dependencies inline, empty.
NO_DEPENDENCIES = {
    "dependencies-TOTAL_FORMS": "0",
    "dependencies-INITIAL_FORMS": "0",
    "dependencies-MIN_NUM_FORMS": "0",
    "dependencies-MAX_NUM_FORMS": "1000",
}


@pytest.fixture
def chat(db):
    return flag_create(
        data={"name": "chat", "enabled": True, "rollout_percent": 30, "owner": "chat"}, actor=Actor.system()
    )


def test_admin_list_search_filter_and_on_for_column(operator_client, chat):
    flag_create(data={"name": "digest", "owner": "growth"}, actor=Actor.system())
    listing = operator_client.get("/admin/flags/flag/?q=chat&enabled=1&owner=chat").content.decode()
    assert "on for 30 % of users" in listing and "digest" not in listing


def test_admin_edit_goes_through_the_service_and_is_audited(operator_client, chat):
    response = operator_client.post(
        f"/admin/flags/flag/{chat.pk}/change/",
        {
            "enabled": "on",
            "rollout_percent": "60",
            "targeting_keys": "u1\nu2\n",
            "description": "",
            "owner": "chat",
            **NO_DEPENDENCIES,
        },
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    chat.refresh_from_db()
    assert (chat.rollout_percent, chat.targeting_keys) == (60, ["u1", "u2"])
    event = AuditEvent.objects.get(action="flag.update")
    assert event.actor_label == "operator" and event.before["rollout_percent"] == 30
    history = operator_client.get(f"/admin/flags/flag/{chat.pk}/change/").content.decode()
    assert "History" in history and "flag.update" in history


def test_admin_refuses_bad_values(operator_client, chat):
    response = operator_client.post(
        f"/admin/flags/flag/{chat.pk}/change/",
        {"enabled": "on", "rollout_percent": "150", "targeting_keys": "x" * 300, "owner": "", **NO_DEPENDENCIES},
    )
    assert response.status_code == 200  # the form again, with errors
    chat.refresh_from_db()
    assert chat.rollout_percent == 30


def test_admin_add_and_bad_name(operator_client):
    bad = {"name": "Bad Name", "rollout_percent": "0", "owner": "", **NO_DEPENDENCIES}
    operator_client.post("/admin/flags/flag/add/", bad)
    assert not Flag.objects.exists()
    operator_client.post("/admin/flags/flag/add/", {**bad, "name": "new_flag"})
    assert Flag.objects.filter(name="new_flag").exists()
    assert AuditEvent.objects.filter(action="flag.create", actor_label="operator").exists()


def test_admin_actions(operator_client, chat):
    # Production (the default environment of the actions) asks first: the page lists the flags.
    url, confirm = "/admin/flags/flag/", {"environment": "production", "confirm": "yes"}
    asked = operator_client.post(url, {"action": "disable", "_selected_action": [chat.pk]})
    assert asked.status_code == 200 and "production is a production environment" in asked.content.decode()
    chat.refresh_from_db()
    assert chat.enabled is True
    operator_client.post(url, {"action": "disable", "_selected_action": [chat.pk], **confirm})
    chat.refresh_from_db()
    assert chat.enabled is False
    rollout = {"action": "set_rollout", "_selected_action": [chat.pk], **confirm}
    operator_client.post(url, {**rollout, "rollout_percent": "80"})
    chat.refresh_from_db()
    assert chat.rollout_percent == 80
    operator_client.post(url, {**rollout, "rollout_percent": "180"})
    chat.refresh_from_db()
    assert chat.rollout_percent == 80
    operator_client.post(url, {"action": "enable", "_selected_action": [chat.pk], **confirm})
    chat.refresh_from_db()
    assert chat.enabled is True
    assert AuditEvent.objects.filter(object_type="flags.flag", actor_label="operator").count() == 3


def test_admin_delete_is_audited(operator_client, chat):
    operator_client.post(f"/admin/flags/flag/{chat.pk}/delete/", {"post": "yes"})
    assert not Flag.objects.exists()
    assert AuditEvent.objects.get(action="flag.delete").before["name"] == "chat"


def test_viewer_sees_flags_but_cannot_toggle(viewer_client, chat):
    page = viewer_client.get("/flags/").content.decode()
    assert "chat" in page and "on for 30 % of users" in page and "/flags/chat/toggle" not in page
    assert viewer_client.post("/flags/chat/toggle").status_code == 403
    chat.refresh_from_db()
    assert chat.enabled is True


def test_operator_with_the_permission_toggles_from_the_page(viewer_client, viewer, chat):
    viewer.user_permissions.add(Permission.objects.get(codename="change_flag", content_type__app_label="flags"))
    page = viewer_client.get("/flags/").content.decode()
    assert "/flags/chat/toggle" in page
    response = viewer_client.post("/flags/chat/toggle", {"enabled": "0", "confirm": "yes"}, follow=True)
    assert b"chat is now disabled" in response.content
    chat.refresh_from_db()
    assert chat.enabled is False
    assert AuditEvent.objects.get(action="flag.toggle").actor_label == "viewer"
    assert viewer_client.get("/flags/chat/toggle").status_code == 405


def test_flag_page_history_and_evaluate_box(operator_client, chat):
    operator_client.post("/flags/chat/toggle", {"confirm": "yes"})
    operator_client.post("/flags/chat/toggle", {"confirm": "yes"})  # production asks either way
    page = operator_client.get("/flags/chat/?user_id=user-9").content.decode()
    expected = "on" if bucket("chat", "user-9") <= 30 else "off"
    assert f"<strong>{expected}</strong> (SPLIT)" in page
    assert page.count("flag.toggle") == 2
    assert "depends on the user" in operator_client.get("/flags/chat/").content.decode()
    assert operator_client.get("/flags/nope/").status_code == 404
    assert "at most 256" in operator_client.get("/flags/chat/?user_id=" + "x" * 300).content.decode()
