"""The audit trail: one helper, secrets redacted, read-only in admin, every admin change recorded."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from controlplane.audit import Actor, audit_record
from controlplane.context import request_id_var
from controlplane.models import AuditEvent
from controlplane.redaction import REDACTED
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def test_record_carries_actor_object_before_after_and_request_id(operator):
    reset = request_id_var.set("req-123")
    try:
        event = audit_record(
            actor=Actor.for_user(operator), action="flag.update", obj=operator, before={"a": 1}, after={"a": 2}
        )
    finally:
        request_id_var.reset(reset)
    event.refresh_from_db()
    assert (event.actor_type, event.actor_user, event.actor_label) == ("user", operator, "operator")
    assert (event.object_type, event.object_id, event.object_label) == ("auth.user", str(operator.pk), "operator")
    assert (event.before, event.after, event.request_id) == ({"a": 1}, {"a": 2}, "req-123")


def test_secrets_are_redacted_by_key_and_by_value(settings):
    after = {
        "password": "hunter2-hunter2",
        "nested": {"api_key": "abc", "webhook_url": "https://user:p4ssw0rd-x@hooks.example.test/T0"},
        "note": "pasted cpt_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA by mistake",
        "list": [{"Authorization": "Bearer x"}],
        "echo": f"key={settings.SECRET_KEY}",
        "enabled": True,
        "owner": "growth",
    }
    event = audit_record(actor=Actor.system(), action="test.change", object_type="x", after=after)
    event.refresh_from_db()
    stored = event.after
    assert stored["password"] == REDACTED
    assert stored["nested"]["api_key"] == REDACTED
    assert (
        "p4ssw0rd-x" not in stored["nested"]["webhook_url"] and "hooks.example.test" in stored["nested"]["webhook_url"]
    )
    assert "cpt_AAAA" not in stored["note"] and stored["note"].startswith("pasted")
    assert stored["list"][0]["Authorization"] == REDACTED
    assert settings.SECRET_KEY not in stored["echo"]
    assert stored["enabled"] is True and stored["owner"] == "growth"


def test_admin_shows_the_trail_read_only(operator_client, operator):
    audit_record(actor=Actor.for_user(operator), action="flag.update", object_type="flags.flag", object_label="chat")
    event = AuditEvent.objects.filter(action="flag.update").get()
    listing = operator_client.get("/admin/controlplane/auditevent/?actor_type__exact=user&q=chat")
    assert listing.status_code == 200 and b"flag.update" in listing.content
    assert operator_client.get("/admin/controlplane/auditevent/add/").status_code == 403
    assert operator_client.get(f"/admin/controlplane/auditevent/{event.pk}/delete/").status_code == 403
    detail = operator_client.get(f"/admin/controlplane/auditevent/{event.pk}/change/")
    assert detail.status_code == 200 and b'name="_save"' not in detail.content
    operator_client.post(f"/admin/controlplane/auditevent/{event.pk}/change/", {"action": "tampered"})
    event.refresh_from_db()
    assert event.action == "flag.update"
    # No bulk delete action either.
    operator_client.post(
        "/admin/controlplane/auditevent/", {"action": "delete_selected", "_selected_action": [event.pk], "post": "yes"}
    )
    assert AuditEvent.objects.filter(pk=event.pk).exists()


def test_filters_by_action_object_type_and_date(operator_client):
    audit_record(actor=Actor.system(), action="backup.run", object_type="backups.backup")
    year = timezone.now().year
    for query in ["action__exact=backup.run", "object_type__exact=backups.backup", f"time__year={year}"]:
        response = operator_client.get(f"/admin/controlplane/auditevent/?{query}")
        assert response.status_code == 200 and b"backup.run" in response.content


def test_user_changed_in_admin_is_audited_without_the_password(operator_client):
    user = UserFactory(username="casey")
    response = operator_client.post(
        f"/admin/auth/user/{user.pk}/change/",
        {
            "username": "casey",
            "email": "casey@example.test",
            "is_active": "on",
            "is_staff": "on",
            "date_joined_0": "2026-01-01",
            "date_joined_1": "00:00:00",
            "initial-date_joined_0": "2026-01-01",
            "initial-date_joined_1": "00:00:00",
        },
    )
    assert response.status_code == 302, response.content[:2000]
    event = AuditEvent.objects.get(action="user.change")
    assert event.before["is_staff"] is False and event.after["is_staff"] is True
    assert "password" not in event.before and "password" not in event.after
    assert event.actor_label == "operator"


def test_user_deleted_in_admin_is_audited(operator_client):
    user = UserFactory(username="leaver")
    operator_client.post(f"/admin/auth/user/{user.pk}/delete/", {"post": "yes"})
    assert not get_user_model().objects.filter(username="leaver").exists()
    event = AuditEvent.objects.get(action="user.delete")
    assert event.before["username"] == "leaver" and event.object_label == "leaver"


def test_logins_are_audited(client, operator):
    client.post("/accounts/login/", {"username": "operator", "password": "wrong"})
    client.post("/accounts/login/", {"username": "operator", "password": "correct horse battery staple"})
    actions = list(AuditEvent.objects.order_by("id").values_list("action", flat=True))
    assert actions == ["auth.login_failed", "auth.login"]
    failed = AuditEvent.objects.get(action="auth.login_failed")
    assert "wrong" not in str(failed.after) and failed.after["username"] == "operator"


def test_filters_by_who(operator_client, operator, make_token):
    audit_record(actor=Actor.for_user(operator), action="flag.toggle", object_type="flags.flag")
    audit_record(actor=Actor.system(), action="backup.run", object_type="backups.backup")
    response = operator_client.get(f"/admin/controlplane/auditevent/?actor_user__id__exact={operator.pk}")
    assert response.status_code == 200
    actions = {event.action for event in response.context["cl"].result_list}
    assert "flag.toggle" in actions and "backup.run" not in actions  # (and the operator's own login)


def test_password_changed_in_admin_is_audited_without_the_password(operator_client):
    user = UserFactory(username="casey")
    response = operator_client.post(
        f"/admin/auth/user/{user.pk}/password/",
        {"password1": "n3w-Secret-Passw0rd!", "password2": "n3w-Secret-Passw0rd!", "usable_password": "true"},
    )
    assert response.status_code == 302, response.content[:2000]
    event = AuditEvent.objects.get(action="user.password_change")
    assert event.object_label == "casey" and event.actor_label == "operator"
    assert "n3w-Secret" not in str(event.before) + str(event.after)
    # A form with errors changes nothing and records nothing.
    operator_client.post(f"/admin/auth/user/{user.pk}/password/", {"password1": "a", "password2": "b"})
    assert AuditEvent.objects.filter(action="user.password_change").count() == 1


def test_lifting_a_lockout_in_admin_is_audited(operator_client):
    from axes.models import AccessAttempt

    attempt = AccessAttempt.objects.create(
        username="casey", ip_address="203.0.113.9", user_agent="test", failures_since_start=5, get_data="",
        post_data="", http_accept="", path_info="/accounts/login/",
    )  # fmt: skip
    response = operator_client.post(
        "/admin/axes/accessattempt/", {"action": "delete_selected", "_selected_action": [attempt.pk], "post": "yes"}
    )
    assert response.status_code == 302
    assert not AccessAttempt.objects.exists()
    event = AuditEvent.objects.get(action="accessattempt.delete")
    assert event.before["username"] == "casey" and event.actor_label == "operator"


def test_waffle_switches_changed_in_admin_are_audited(operator_client):
    from waffle.models import Switch

    switch = Switch.objects.create(name="maintenance_banner", active=False)
    response = operator_client.post(
        "/admin/waffle/switch/", {"action": "enable_switches", "_selected_action": [switch.pk]}
    )
    assert response.status_code == 302
    switch.refresh_from_db()
    assert switch.active is True
    event = AuditEvent.objects.get(action="switch.change")
    assert event.before["active"] is False and event.after["active"] is True
    operator_client.post(
        "/admin/waffle/switch/", {"action": "delete_audited", "_selected_action": [switch.pk], "post": "yes"}
    )
    assert not Switch.objects.exists() and AuditEvent.objects.filter(action="switch.delete").count() == 1


def test_own_password_changed_through_the_admin_link_is_audited(client):
    user = UserFactory(username="dana", is_staff=True, is_superuser=True)
    client.force_login(user)
    response = client.post(
        "/admin/password_change/",
        {
            "old_password": "correct horse battery staple",
            "new_password1": "n3w-Secret-Passw0rd!",
            "new_password2": "n3w-Secret-Passw0rd!",
        },
    )
    assert response.status_code == 302, response.content[:2000]
    event = AuditEvent.objects.get(action="user.password_change")
    assert event.object_label == "dana" and event.actor_label == "dana"
    assert "Secret" not in str(event.before) + str(event.after)
