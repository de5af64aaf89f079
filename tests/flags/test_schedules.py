"""Scheduled flag changes: applied by beat's task once their time has come (the clock is the ``now``
given to the service), cancellable, never applied twice, with the staleness rule of flags/schedules.py,
audited as the schedule on behalf of whoever scheduled; and the flag page that schedules and lists them."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.test import Client
from django.utils import timezone

from controlplane.audit import Actor
from controlplane.models import AuditEvent
from flags import definitions as docs
from flags.models import Flag, ScheduledChange
from flags.schedules import (
    MOVED,
    InvalidSchedule,
    ScheduledChangeNotFound,
    apply_due,
    cancel_change,
    schedule_change,
)
from flags.services import InvalidFlagDefinition, flag_create, flag_state_set, flag_update
from flags.tasks import apply_scheduled_changes

pytestmark = pytest.mark.django_db
ALICE = Actor.system("alice")
SYSTEM = Actor.system("tests")


@pytest.fixture
def chat(db):
    return flag_create(data={"name": "chat", "enabled": False, "rollout_percent": 10}, actor=SYSTEM)


def _state(name: str = "chat", env: str = "production") -> dict:
    return docs.flag_doc(docs.flags_queryset().get(name=name))["environments"][env]


def later(minutes: int = 5) -> datetime:
    return timezone.now() + timedelta(minutes=minutes)


def test_a_due_change_is_applied_by_the_task_and_audited_as_the_schedule_for_its_author(chat):
    change = schedule_change(name="chat", environment=None, at=later(), kind="enable", actor=ALICE)
    assert apply_due(now=timezone.now()) == []  # not yet
    assert Flag.objects.get(name="chat").enabled is False
    assert apply_due(now=change.at + timedelta(seconds=1))[0].status == "applied"
    assert Flag.objects.get(name="chat").enabled is True
    change.refresh_from_db()
    assert (change.status, change.note, change.applied_at is not None) == ("applied", "", True)
    event = AuditEvent.objects.filter(action="flag.toggle").get()
    assert event.actor_label == "schedule on behalf of alice"
    assert event.actor_type == "system"
    assert AuditEvent.objects.filter(action="flag.schedule", actor_label="alice").exists()


def test_the_beat_task_applies_what_is_due(chat):
    change = schedule_change(
        name="chat", environment="staging", at=later(), kind="rollout", payload={"rollout_percent": 50}, actor=ALICE
    )
    ScheduledChange.objects.filter(pk=change.pk).update(at=timezone.now() - timedelta(seconds=1))
    assert apply_scheduled_changes() == 1
    assert _state(env="staging")["strategies"][-1]["rollout"] == 50
    assert _state()["strategies"][-1]["rollout"] == 10  # production untouched
    assert apply_scheduled_changes() == 0


def test_a_cancelled_change_is_never_applied_and_cannot_be_cancelled_twice(chat):
    change = schedule_change(name="chat", environment=None, at=later(), kind="enable", actor=ALICE)
    cancel_change(change_id=change.pk, actor=ALICE)
    assert apply_due(now=later(10)) == []
    assert Flag.objects.get(name="chat").enabled is False
    change.refresh_from_db()
    assert change.status == "cancelled"
    with pytest.raises(ScheduledChangeNotFound):
        cancel_change(change_id=change.pk, actor=ALICE)
    assert AuditEvent.objects.filter(action="flag.schedule.cancel").count() == 1


def test_a_change_is_claimed_once_whatever_runs_apply_it(chat):
    change = schedule_change(name="chat", environment=None, at=later(), kind="enable", actor=ALICE)
    first = apply_due(now=later(10))
    second = apply_due(now=later(10))
    assert [o.change_id for o in first] == [change.pk] and second == []
    assert AuditEvent.objects.filter(action="flag.toggle").count() == 1


@pytest.mark.django_db(transaction=True)
def test_two_workers_at_once_apply_a_change_once(chat):
    if connection.vendor == "sqlite":
        pytest.skip("SQLite serialises writers; the race needs PostgreSQL (DATABASE_URL)")
    schedule_change(name="chat", environment=None, at=later(), kind="disable", actor=ALICE)
    flag_update(name="chat", changes={"enabled": True}, actor=SYSTEM)
    results: list[int] = []
    barrier = threading.Barrier(4)

    def work() -> None:
        barrier.wait()
        try:
            results.append(len(apply_due(now=later(10))))
        finally:
            connection.close()

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [0, 0, 0, 1]
    assert AuditEvent.objects.filter(action="flag.toggle", actor_label__startswith="schedule").count() == 1


def test_on_off_and_rollout_apply_whatever_moved_and_say_so(chat):
    off = schedule_change(name="chat", environment=None, at=later(1), kind="disable", actor=ALICE)
    rollout = schedule_change(
        name="chat", environment=None, at=later(2), kind="rollout", payload={"rollout_percent": 40}, actor=ALICE
    )
    flag_update(name="chat", changes={"enabled": True, "rollout_percent": 20}, actor=SYSTEM)  # moved by hand
    outcomes = apply_due(now=later(3))
    assert [(o.status, o.note) for o in outcomes] == [("applied", MOVED), ("applied", MOVED)]
    state = _state()
    assert state["enabled"] is False and state["strategies"][-1]["rollout"] == 40
    off.refresh_from_db()
    rollout.refresh_from_db()
    assert off.note == rollout.note == MOVED


def test_a_state_change_applies_only_on_the_state_it_was_made_for(chat):
    wanted = {**docs.simple_state(True, 75, ["u1"])}
    kept = schedule_change(
        name="chat", environment=None, at=later(1), kind="state", payload={"state": wanted}, actor=ALICE
    )
    stale = schedule_change(
        name="chat", environment="staging", at=later(1), kind="state", payload={"state": wanted}, actor=ALICE
    )
    flag_state_set(name="chat", environment="staging", state=docs.simple_state(False, 5, []), actor=SYSTEM)
    apply_due(now=later(2))
    kept.refresh_from_db()
    stale.refresh_from_db()
    assert kept.status == "applied" and _state()["enabled"] is True
    assert stale.status == "skipped" and MOVED in stale.note
    assert _state(env="staging")["strategies"][-1]["rollout"] == 5  # the hand edit stays
    skip = AuditEvent.objects.get(action="flag.schedule.skip")
    assert skip.actor_label == "schedule on behalf of alice" and MOVED in skip.after["note"]


def test_a_rollout_on_a_state_that_grew_strategies_is_skipped_saying_why(chat):
    change = schedule_change(
        name="chat", environment=None, at=later(1), kind="rollout", payload={"rollout_percent": 60}, actor=ALICE
    )
    custom = docs.simple_state(True, 10, [])
    custom["strategies"][0]["constraints"] = [
        {"field": "country", "operator": "IN", "values": ["fr"], "case_insensitive": False, "inverted": False}
    ]
    flag_state_set(name="chat", environment="production", state=custom, actor=SYSTEM)
    apply_due(now=later(2))
    change.refresh_from_db()
    assert change.status == "skipped" and "edit its strategies" in change.note and MOVED in change.note
    assert _state()["strategies"][0]["constraints"]  # untouched


def test_a_time_in_the_past_or_a_bad_payload_is_refused_clearly(chat):
    now = timezone.now()
    with pytest.raises(InvalidSchedule, match="must be in the future"):
        schedule_change(
            name="chat", environment=None, at=now - timedelta(minutes=1), kind="enable", actor=ALICE, now=now
        )
    with pytest.raises(InvalidSchedule, match="must be one of"):
        schedule_change(name="chat", environment=None, at=later(), kind="explode", actor=ALICE)
    with pytest.raises(InvalidFlagDefinition, match="rollout_percent"):
        schedule_change(
            name="chat", environment=None, at=later(), kind="rollout", payload={"rollout_percent": 101}, actor=ALICE
        )
    with pytest.raises(InvalidFlagDefinition):
        schedule_change(
            name="chat", environment=None, at=later(), kind="state", payload={"state": {"enabled": "yes"}}, actor=ALICE
        )
    with pytest.raises(InvalidSchedule, match="no payload"):
        schedule_change(name="chat", environment=None, at=later(), kind="enable", payload={"x": 1}, actor=ALICE)
    assert not ScheduledChange.objects.exists()


def test_the_flag_page_schedules_lists_and_cancels(operator_client, viewer, chat):
    viewer_client = Client()
    viewer_client.force_login(viewer)
    at = (timezone.now() + timedelta(hours=1)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M")
    response = operator_client.post(
        "/flags/chat/schedule", {"environment": "staging", "at": at, "action": "rollout", "rollout_percent": "30"}
    )
    assert response.status_code == 302
    change = ScheduledChange.objects.get()
    assert (change.environment.name, change.kind, change.payload, change.created_by) == (
        "staging",
        "rollout",
        {"rollout_percent": 30},
        "operator",
    )
    assert change.at.strftime("%Y-%m-%dT%H:%M") == at
    html = operator_client.get("/flags/chat/").content.decode()
    assert "Scheduled changes" in html and "rollout 30 %" in html and ">Cancel</button>" in html
    viewer_html = viewer_client.get("/flags/chat/").content.decode()
    assert "rollout 30 %" in viewer_html and ">Cancel</button>" not in viewer_html
    assert viewer_client.post("/flags/chat/schedule/cancel", {"change": change.pk}).status_code == 403
    operator_client.post("/flags/chat/schedule/cancel", {"change": change.pk})
    change.refresh_from_db()
    assert change.status == "cancelled"
    html = operator_client.get("/flags/chat/").content.decode()
    assert "No change pending." in html and "Cancelled: cancelled by operator" in html


def test_the_page_refuses_a_past_time_saying_so(operator_client, chat):
    past = (timezone.now() - timedelta(hours=1)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M")
    response = operator_client.post(
        "/flags/chat/schedule", {"environment": "production", "at": past, "action": "enable"}, follow=True
    )
    assert "Not scheduled: at: must be in the future" in response.content.decode()
    soon = later().astimezone(UTC).strftime("%Y-%m-%dT%H:%M")
    response = operator_client.post(
        "/flags/chat/schedule", {"environment": "production", "at": soon, "action": "rollout"}, follow=True
    )
    assert "Not scheduled: Rollout %: A rollout needs a percentage from 0 to 100." in response.content.decode()
    assert not ScheduledChange.objects.exists()


def test_the_admin_cancels_pending_changes(operator_client, chat):
    change = schedule_change(name="chat", environment=None, at=later(), kind="enable", actor=ALICE)
    response = operator_client.post(
        "/admin/flags/scheduledchange/", {"action": "cancel", "_selected_action": [change.pk], "index": 0}
    )
    assert response.status_code == 302
    change.refresh_from_db()
    assert change.status == "cancelled"


def test_finished_changes_go_with_retention_pending_ones_stay(chat, settings):
    from controlplane.retention import prune

    settings.FLAG_SCHEDULE_RETENTION_DAYS = 30
    done = schedule_change(name="chat", environment=None, at=later(), kind="enable", actor=ALICE)
    pending = schedule_change(name="chat", environment=None, at=later(), kind="disable", actor=ALICE)
    cancel_change(change_id=done.pk, actor=ALICE)
    ScheduledChange.objects.update(at=timezone.now() - timedelta(days=40))
    assert prune()["finished scheduled flag changes"] == 1
    assert list(ScheduledChange.objects.values_list("pk", flat=True)) == [pending.pk]
