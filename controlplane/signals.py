"""Audit events for sign-ins: logins, logouts, failed logins and lockouts."""

from __future__ import annotations

from typing import Any

from controlplane.audit import Actor, audit_record
from controlplane.client_address import client_ip


def _client(request: Any) -> dict[str, str]:
    if request is None:
        return {}
    return {"ip_address": getattr(request, "axes_ip_address", None) or client_ip(request)}


def on_login(sender: Any, request: Any, user: Any, **_: Any) -> None:
    audit_record(actor=Actor.for_user(user), action="auth.login", obj=user, after=_client(request))


def on_logout(sender: Any, request: Any, user: Any, **_: Any) -> None:
    if user is not None:
        audit_record(actor=Actor.for_user(user), action="auth.logout", obj=user, after=_client(request))


def on_login_failed(sender: Any, credentials: dict[str, Any], request: Any = None, **_: Any) -> None:
    username = str(credentials.get("username", ""))[:150]
    audit_record(
        actor=Actor.system("anonymous"),
        action="auth.login_failed",
        object_type="auth.user",
        object_label=username,
        after={"username": username, **_client(request)},
    )


def on_lockout(sender: Any, request: Any, username: str, ip_address: str, **_: Any) -> None:
    """One event per lockout: django-axes signals again for each attempt made while locked."""
    from django.conf import settings
    from django.utils import timezone

    from controlplane.models import AuditEvent

    after = {"username": username, "ip_address": ip_address}
    since = timezone.now() - settings.AXES_COOLOFF_TIME
    if AuditEvent.objects.filter(action="auth.lockout", time__gte=since, after=after).exists():
        return
    audit_record(
        actor=Actor.system("django-axes"),
        action="auth.lockout",
        object_type="auth.user",
        object_label=str(username)[:200],
        after=after,
    )


def connect() -> None:
    from axes.signals import user_locked_out
    from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed

    user_logged_in.connect(on_login, dispatch_uid="cp-audit-login")
    user_logged_out.connect(on_logout, dispatch_uid="cp-audit-logout")
    user_login_failed.connect(on_login_failed, dispatch_uid="cp-audit-login-failed")
    user_locked_out.connect(on_lockout, dispatch_uid="cp-audit-lockout")
