"""The ground's registry of changes (controlplane.changes): an app declares which of its audit actions are
changes, and every chart and alert reads them with no import of that app; one query per read."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from controlplane import changes
from controlplane.audit import Actor, audit_record
from controlplane.changes import changes_before, changes_between, register_change_kind
from controlplane.models import AuditEvent

pytestmark = pytest.mark.django_db
BOB = Actor.system("bob")


@pytest.fixture
def registry():
    """The apps' declarations, restored after a test that adds its own."""
    saved = dict(changes._REGISTRY)
    yield
    changes._REGISTRY.clear()
    changes._REGISTRY.update(saved)


def record(action: str, minutes_ago: float = 0, **fields) -> AuditEvent:
    event = audit_record(actor=BOB, action=action, object_label="checkout", **fields)
    AuditEvent.objects.filter(pk=event.pk).update(time=timezone.now() - timedelta(minutes=minutes_ago))
    return event


def read(**window) -> list[tuple[str, str, str]]:
    now = timezone.now()
    return [(c.kind, c.action, c.what) for c in changes_between(now - timedelta(hours=1), now, **window)]


def test_a_kind_an_app_registers_is_read_with_no_other_change(registry):
    # A kind no app declares (deployments declares the guarded rollouts' "guarded_rollout." itself).
    record("experiment.step", after={"percent": 25})
    assert read() == []
    register_change_kind(
        "experiment",
        prefix="experiment.",
        exclude=["experiment.planned"],
        describe=lambda action, label, before, after: f"experiment on {label} at {after['percent']} %",
    )
    record("experiment.planned", 1)
    assert read() == [("experiment", "experiment.step", "experiment on checkout at 25 %")]


def test_the_longest_prefix_decides_the_kind(registry):
    register_change_kind("rollout", prefix="flag.rollout.")
    record("flag.rollout.step", after={"rollout_percent": 5})
    record("flag.toggle", before={"enabled": False}, after={"enabled": True})
    kinds = {action: kind for kind, action, _ in read()}
    assert kinds == {"flag.rollout.step": "rollout", "flag.toggle": "flag"}


def test_a_dry_run_and_events_outside_the_window_are_left_out():
    record("deployment.started", after={"environment": "production", "version": "v1", "dry_run": True})
    record("deployment.started", 90, after={"environment": "production", "version": "v2", "dry_run": False})
    record("deployment.started", 5, after={"environment": "production", "version": "v3", "dry_run": False})
    record("deployment.started", 4)  # recorded before runs said what they were: still a change
    assert [what for _, _, what in read()] == [
        "deployment checkout of v3 to production: started",
        "deployment checkout: started",
    ]


def test_a_describer_that_fails_on_an_old_event_still_shows_it_plainly(registry):
    register_change_kind("odd", prefix="odd.", describe=lambda *args: 1 / 0)
    record("odd.thing")
    assert read() == [("odd", "odd.thing", "odd.thing checkout")]


def test_the_newest_are_kept_when_there_are_more_than_the_limit():
    for minutes in (30, 20, 10):
        record("flag.toggle", minutes, before={"enabled": False}, after={"enabled": True})
    now = timezone.now()
    kept = changes_between(now - timedelta(hours=1), now, limit=2)
    assert [round((now - c.time).total_seconds() / 60) for c in kept] == [20, 10]  # oldest first


def test_a_prefix_must_end_with_a_dot(registry):
    with pytest.raises(ValueError, match="ends with a dot"):
        register_change_kind("bad", prefix="flag")


def test_the_changes_before_alerts_come_from_what_the_page_read_when_it_covers_them(django_assert_num_queries):
    record("flag.toggle", 30, before={"enabled": False}, after={"enabled": True})
    record("flag.toggle", 100, before={"enabled": True}, after={"enabled": False})
    now = timezone.now()
    since = now - timedelta(days=7)
    with django_assert_num_queries(1):
        known = changes_between(since, now)
    moments = {1: now - timedelta(minutes=10), 2: now - timedelta(minutes=50)}
    with django_assert_num_queries(0):
        found = changes_before(moments, known=known, known_since=since)
    assert [[c.what for c in found[key]] for key in (1, 2)] == [
        ["flag checkout in production: turned on"],
        ["flag checkout in production: turned off"],
    ]
    # An alert that fired before the page's window: one query for it.
    with django_assert_num_queries(1):
        old = changes_before({3: now - timedelta(days=8)}, known=known, known_since=since)
    assert old == {3: []}


def test_each_alert_gets_its_own_hour_however_many_changes_lie_between_alerts_far_apart(django_assert_num_queries):
    now = timezone.now()
    old, new = now - timedelta(days=3), now - timedelta(minutes=5)
    for minutes in (40, 20):
        record("flag.toggle", 3 * 24 * 60 + minutes, before={"enabled": False}, after={"enabled": True})
        record("flag.toggle", 5 + minutes, before={"enabled": True}, after={"enabled": False})
    # Between the two alerts' hours, more changes than one read keeps: the old alert's must not be crowded out.
    AuditEvent.objects.bulk_create(
        AuditEvent(
            time=now - timedelta(days=2, minutes=i), actor_type="system", actor_label="bob", action="flag.toggle",
            object_label="search", before={"enabled": False}, after={"enabled": True},
        )
        for i in range(changes.MAX_CHANGES + 50)
    )  # fmt: skip
    with django_assert_num_queries(2):  # one over both hours, one more for the hour it cut short
        found = changes_before({"old": old, "new": new})
    assert [c.what for c in found["old"]] == ["flag checkout in production: turned on"] * 2
    assert [c.what for c in found["new"]] == ["flag checkout in production: turned off"] * 2
    with django_assert_num_queries(1):  # no flood between them: one query answers both
        assert [len(v) for v in changes_before({"a": new, "b": new - timedelta(minutes=30)}).values()] == [2, 1]


def test_an_alert_lists_the_newest_of_its_own_hour_up_to_the_limit():
    now = timezone.now()
    AuditEvent.objects.bulk_create(
        AuditEvent(
            time=now - timedelta(minutes=50, seconds=i), actor_type="system", actor_label="bob",
            action="flag.toggle", object_label="search", before={"enabled": False}, after={"enabled": True},
        )
        for i in range(changes.MAX_CHANGES + 10)
    )  # fmt: skip
    found = changes_before({"a": now, "b": now - timedelta(hours=2)})
    assert len(found["a"]) == changes.MAX_CHANGES and found["b"] == []
    assert found["a"][-1].time == now - timedelta(minutes=50)  # the newest kept, oldest first
