"""Failed logins are limited per user and address; each lockout is an audit event."""

from __future__ import annotations

import pytest

from controlplane.models import AuditEvent

pytestmark = pytest.mark.django_db
GOOD = "correct horse battery staple"


def attempt(client, password: str, ip: str = "203.0.113.7"):
    return client.post("/accounts/login/", {"username": "operator", "password": password}, REMOTE_ADDR=ip)


def test_five_failures_lock_the_user_at_that_address(client, operator, settings):
    assert settings.AXES_FAILURE_LIMIT == 5
    for _ in range(4):
        assert attempt(client, "wrong").status_code == 200
    locked = attempt(client, "wrong")
    assert locked.status_code == 429
    assert b"Too many failed logins" in locked.content
    # Even the right password is refused while locked, and no session is made.
    assert attempt(client, GOOD).status_code == 429
    assert "_auth_user_id" not in client.session
    event = AuditEvent.objects.get(action="auth.lockout")
    assert event.after == {"username": "operator", "ip_address": "203.0.113.7"}
    assert event.actor_type == "system"


def test_another_address_is_not_locked(client, operator):
    for _ in range(5):
        attempt(client, "wrong")
    response = attempt(client, GOOD, ip="198.51.100.9")
    assert response.status_code == 302


def test_admin_login_is_limited_too(client, operator):
    for _ in range(5):
        client.post("/admin/login/", {"username": "operator", "password": "wrong"}, REMOTE_ADDR="203.0.113.8")
    response = client.post("/admin/login/", {"username": "operator", "password": GOOD}, REMOTE_ADDR="203.0.113.8")
    assert response.status_code == 429
