"""Admin actions write, so each declares the permission it needs: a staff member who may only look is
offered none and runs none, on every model the admin shows (the project's, waffle's and axes')."""

from __future__ import annotations

import pytest
from django.contrib import admin
from django.contrib.auth.models import Permission
from django.urls import reverse

from controlplane.models import AuditEvent
from tests.factories import UserFactory

# Actions that only read (an export, say) may be offered to a viewer; the project has none.
READ_ONLY_ACTIONS: frozenset[str] = frozenset()


def every_action() -> list[tuple[type, str]]:
    """(model, action name) for every action of every registered admin, the site-wide ones included,
    before any permission filter."""
    return [
        (model, name)
        for model, model_admin in admin.site._registry.items()
        for _, name, _ in model_admin._get_base_actions()
    ]


def rows_of_every_model() -> dict[str, list[dict]]:
    return {model._meta.label: list(model.objects.order_by("pk").values()) for model in admin.site._registry}


def changelist(model: type) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")


@pytest.fixture
def looker(db):
    """Staff holding every view permission there is, and no other."""
    user = UserFactory(username="looker", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename__startswith="view_"))
    return user


def test_a_view_only_staff_member_is_offered_no_action(rf, looker, one_of_each):
    request = rf.get("/admin/")
    request.user = looker
    offered = {
        model._meta.label: sorted(set(model_admin.get_actions(request)) - READ_ONLY_ACTIONS)
        for model, model_admin in admin.site._registry.items()
    }
    assert {label: names for label, names in offered.items() if names} == {}
    # The same admins do offer their actions to whom may use them.
    request.user = UserFactory(username="root", is_staff=True, is_superuser=True)
    assert "revoke" in admin.site._registry[type(one_of_each.token)].get_actions(request)


def test_a_view_only_staff_member_posting_every_action_changes_nothing(
    client, looker, one_of_each, django_capture_on_commit_callbacks
):
    actions = every_action()
    print(f"{len(actions)} admin actions on {len(admin.site._registry)} models")  # noqa: T201
    # delete_selected on each model, and the project's own: revoke, enable, deploy, cancel, verify, ...
    assert len(actions) >= len(admin.site._registry) + 15
    assert [model._meta.label for model in admin.site._registry if not model.objects.exists()] == []
    client.force_login(looker)
    before = rows_of_every_model()
    events = AuditEvent.objects.count()
    changed = []
    with django_capture_on_commit_callbacks() as queued:
        for model, name in actions:
            first = model.objects.order_by("pk").values_list("pk", flat=True).first()
            response = client.post(changelist(model), {"action": name, "_selected_action": [first], "index": 0})
            assert response.status_code in (200, 302, 403), (model._meta.label, name, response.status_code)
            if rows_of_every_model() != before or AuditEvent.objects.count() != events:
                changed.append(f"{model._meta.label}:{name}")
                before, events = rows_of_every_model(), AuditEvent.objects.count()
    assert changed == []
    assert queued == []  # no task, cache bump or notification waiting for the commit


def test_whoever_may_change_tokens_still_revokes_them(client, one_of_each, user_with):
    client.force_login(user_with("controlplane.view_apitoken", "controlplane.change_apitoken"))
    token = one_of_each.token
    response = client.post(changelist(type(token)), {"action": "revoke", "_selected_action": [token.pk], "index": 0})
    assert response.status_code == 302
    token.refresh_from_db()
    assert token.is_revoked
    assert AuditEvent.objects.filter(action="api_token.revoke").exists()
