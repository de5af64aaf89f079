"""The flags admin: the flag x environment matrix (one click, production asks first), the actions per
environment, dependencies and variant overrides as forms, and a strategy edit scheduled from its page."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission

from controlplane.audit import Actor
from controlplane.models import AuditEvent
from flags.models import Dependency, FlagState, ScheduledChange, Variant
from flags.schedules import apply_due
from flags.services import flag_create, flag_dependencies_set

pytestmark = pytest.mark.django_db
SYSTEM = Actor.system()


def _management(prefix: str, total: int, initial: int = 0) -> dict[str, str]:
    return {
        f"{prefix}-TOTAL_FORMS": str(total),
        f"{prefix}-INITIAL_FORMS": str(initial),
        f"{prefix}-MIN_NUM_FORMS": "0",
        f"{prefix}-MAX_NUM_FORMS": "1000",
    }


@pytest.fixture
def chat(db):
    return flag_create(data={"name": "chat", "enabled": True, "rollout_percent": 30}, actor=SYSTEM)


def _enabled(name: str, env: str) -> bool:
    return FlagState.objects.get(flag__name=name, environment__name=env).enabled


# --- The matrix --------------------------------------------------------------------------------------


def test_the_changelist_is_a_matrix_with_a_button_per_environment(operator_client, chat):
    page = operator_client.get("/admin/flags/flag/").content.decode()
    for env in ("development", "staging", "production"):
        assert f'aria-label="Turn {"off" if env == "production" else "on"} chat in {env}"' in page, env
    assert "on for 30 % of users" in page  # production's cell says who it is on for


def test_one_click_turns_a_flag_on_in_staging_and_nowhere_else(operator_client, chat):
    response = operator_client.post(f"/admin/flags/flag/{chat.pk}/toggle/", {"set": "staging:1"})
    assert response.status_code == 302
    assert _enabled("chat", "staging") and not _enabled("chat", "development") and _enabled("chat", "production")
    event = AuditEvent.objects.get(action="flag.toggle")
    assert event.actor_label == "operator" and event.after["environment"] == "staging"


def test_production_asks_first_and_the_confirmation_sets_the_posted_state(operator_client, chat):
    url = f"/admin/flags/flag/{chat.pk}/toggle/"
    asked = operator_client.post(url, {"set": "production:0"})
    assert asked.status_code == 200
    html = asked.content.decode()
    assert "production is a production environment" in html and "now on for 30 % of users" in html
    assert _enabled("chat", "production") and not AuditEvent.objects.filter(action="flag.toggle").exists()
    done = operator_client.post(url, {"environment": "production", "enabled": "0", "confirm": "yes"})
    assert done.status_code == 302 and not _enabled("chat", "production")
    # The same confirmation posted again sets off again: it never flips back on.
    operator_client.post(url, {"environment": "production", "enabled": "0", "confirm": "yes"})
    assert not _enabled("chat", "production")


def test_both_production_confirmations_share_the_admin_header(operator_client, chat):
    toggle = operator_client.post(f"/admin/flags/flag/{chat.pk}/toggle/", {"set": "production:0"})
    action = operator_client.post("/admin/flags/flag/", {"action": "disable", "_selected_action": [chat.pk]})
    for response, title in ((toggle, "Turn off chat in production?"), (action, "Turn off in production?")):
        assert response.status_code == 200
        assert "admin/confirm_base.html" in [t.name for t in response.templates]
        html = response.content.decode()
        assert '<div class="breadcrumbs">' in html and "model-flag" in html
        assert '&rsaquo; <a href="/admin/flags/flag/">Flags</a>' in html and f"&rsaquo; {title}" in html
        assert "Back, change nothing" in html
    assert not AuditEvent.objects.filter(action__startswith="flag.").exclude(action="flag.create").exists()


@pytest.mark.parametrize("posted", [{"set": "nowhere:1"}, {"set": "staging:maybe"}, {}], ids=["env", "state", "none"])
def test_a_bad_toggle_changes_nothing(operator_client, chat, posted):
    response = operator_client.post(f"/admin/flags/flag/{chat.pk}/toggle/", posted, follow=True)
    assert "No such change" in response.content.decode()
    assert not AuditEvent.objects.filter(action="flag.toggle").exists()


def test_the_toggle_needs_post_and_the_change_permission(operator_client, viewer_client, chat):
    url = f"/admin/flags/flag/{chat.pk}/toggle/"
    assert operator_client.get(url).status_code == 302 and not _enabled("chat", "staging")
    assert viewer_client.post(url, {"set": "staging:1"}).status_code in (302, 403)
    assert not _enabled("chat", "staging")


def test_actions_in_staging_need_no_confirmation(operator_client, chat):
    response = operator_client.post(
        "/admin/flags/flag/", {"action": "enable", "_selected_action": [chat.pk], "environment": "staging"}
    )
    assert response.status_code == 302 and _enabled("chat", "staging")


# --- Dependencies and overrides -----------------------------------------------------------------------


def _flag_form(flag_name: str, rows: list[dict[str, str]], initial: int = 0) -> dict[str, str]:
    data = {"rollout_percent": "30", "enabled": "on", "owner": "", "description": "", "targeting_keys": ""}
    data.update(_management("dependencies", len(rows), initial))
    for i, row in enumerate(rows):
        data.update({f"dependencies-{i}-{key}": value for key, value in row.items()})
    return data


def test_dependencies_are_edited_as_a_form_checked_and_audited(operator_client, chat):
    flag_create(data={"name": "chat_v2"}, actor=SYSTEM)
    url = f"/admin/flags/flag/{chat.pk}/change/"
    saved = operator_client.post(url, _flag_form("chat", [{"parent": "chat_v2", "enabled": "on", "variants": "b\n"}]))
    assert saved.status_code == 302, saved.content.decode()[:2000]
    assert list(Dependency.objects.values_list("parent", "enabled", "variants")) == [("chat_v2", True, ["b"])]
    event = AuditEvent.objects.get(action="flag.dependencies")
    assert event.before == {"dependencies": []} and event.after["dependencies"][0]["feature"] == "chat_v2"


@pytest.mark.parametrize(
    ("parent", "message"),
    [("ghost", "no flag named ghost"), ("chat", "a flag cannot depend on itself"), ("child", "parents are one level")],
    ids=["unknown", "itself", "two-levels"],
)
def test_a_bad_dependency_is_refused_naming_why_and_nothing_changes(operator_client, chat, parent, message):
    flag_create(data={"name": "child"}, actor=SYSTEM)
    flag_create(data={"name": "grandparent"}, actor=SYSTEM)
    flag_dependencies_set(name="child", dependencies=[{"feature": "grandparent"}], actor=SYSTEM)
    refused = operator_client.post(
        f"/admin/flags/flag/{chat.pk}/change/", _flag_form("chat", [{"parent": parent, "enabled": "on"}])
    )
    assert refused.status_code == 200 and message in refused.content.decode()
    assert not Dependency.objects.filter(flag__name="chat").exists()
    assert not AuditEvent.objects.filter(action="flag.dependencies", object_label="chat").exists()


def test_variant_overrides_are_lines_of_field_and_values(operator_client):
    flag = flag_create(data={"name": "coach", "type": "string", "enabled": True, "rollout_percent": 100}, actor=SYSTEM)
    state = FlagState.objects.get(flag=flag, environment__name="production")
    url = f"/admin/flags/flagstate/{state.pk}/change/"
    strategies = state.strategies.count()
    data = {
        "enabled": "on",
        **_management("strategies", strategies, strategies),
        **{f"strategies-{i}-id": str(s.pk) for i, s in enumerate(state.strategies.all())},
        **{f"strategies-{i}-state": str(state.pk) for i in range(strategies)},
        **_management("variants", 1),
        "variants-0-position": "0",
        "variants-0-name": "gentle",
        "variants-0-value": "gentle coach",
        "variants-0-weight": "1000",
        "variants-0-stickiness": "default",
    }
    for i, s in enumerate(state.strategies.all()):
        data.update(
            {
                f"strategies-{i}-position": str(s.position),
                f"strategies-{i}-kind": s.kind,
                f"strategies-{i}-rollout": str(s.rollout),
                f"strategies-{i}-stickiness": s.stickiness,
            }
        )
    refused = operator_client.post(url, {**data, "variants-0-overrides": "userId"})
    assert refused.status_code == 200 and "is not field=value, value" in refused.content.decode()
    assert not Variant.objects.exists()
    saved = operator_client.post(url, {**data, "variants-0-overrides": "userId=u1, u2\nplan=pro"})
    assert saved.status_code == 302, saved.content.decode()[:3000]
    assert Variant.objects.get().overrides == [
        {"field": "userId", "values": ["u1", "u2"]},
        {"field": "plan", "values": ["pro"]},
    ]


# --- A strategy edit scheduled from its page ------------------------------------------------------------


def _strategy_form(rollout: str, apply_at: str) -> dict[str, str]:
    return {
        "position": "0",
        "kind": "flexibleRollout",
        "title": "",
        "rollout": rollout,
        "stickiness": "default",
        "group_id": "",
        "user_ids": "",
        "parameters": "",
        "apply_at": apply_at,
        **_management("constraints", 0),
        **_management("variants", 0),
    }


def test_a_strategy_edit_scheduled_from_its_page_changes_nothing_until_beat_applies_it(operator_client, chat):
    state = FlagState.objects.get(flag=chat, environment__name="production")
    strategy = state.strategies.get()
    url = f"/admin/flags/strategy/{strategy.pk}/change/"
    past = operator_client.post(url, _strategy_form("60", "2020-01-01T10:00"))
    assert past.status_code == 200 and "is not in the future" in past.content.decode()
    response = operator_client.post(url, _strategy_form("60", "2099-01-01T10:00"), follow=True)
    assert "Nothing changed now" in response.content.decode()
    strategy.refresh_from_db()
    assert strategy.rollout == 30 and not AuditEvent.objects.filter(action="flag.state.update").exists()
    assert not LogEntry.objects.exists()
    change = ScheduledChange.objects.get()
    assert (change.kind, change.created_by, change.at) == ("state", "operator", datetime(2099, 1, 1, 10, tzinfo=UTC))
    assert change.payload["state"]["strategies"][0]["rollout"] == 60
    [outcome] = apply_due(now=datetime(2099, 1, 1, 10, 1, tzinfo=UTC))
    assert outcome.status == "applied"
    assert state.strategies.get().rollout == 60


def test_a_scheduled_edit_needs_the_change_permission(client, viewer, chat):
    viewer.user_permissions.add(Permission.objects.get(codename="view_strategy"))
    client.force_login(viewer)
    strategy = FlagState.objects.get(flag=chat, environment__name="production").strategies.get()
    client.post(f"/admin/flags/strategy/{strategy.pk}/change/", _strategy_form("60", "2099-01-01T10:00"))
    assert not ScheduledChange.objects.exists()
