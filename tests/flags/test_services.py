"""Flag writes: validation, audit with before/after, publication to every process after commit."""

from __future__ import annotations

import pytest

from controlplane.audit import Actor
from controlplane.models import AuditEvent
from flags.models import Flag
from flags.selectors import is_on
from flags.services import FlagNotFound, InvalidFlagDefinition, flag_create, flag_toggle, flag_update
from flags.snapshot import current

pytestmark = pytest.mark.django_db
SYSTEM = Actor.system("tests")


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"name": "Bad Name"}, "name"),
        ({"name": "x" * 101}, "name"),
        ({"name": "ok", "rollout_percent": 101}, "rollout_percent"),
        ({"name": "ok", "rollout_percent": -1}, "rollout_percent"),
        ({"name": "ok", "rollout_percent": 12.5}, "rollout_percent"),
        ({"name": "ok", "rollout_percent": "50"}, "rollout_percent"),
        ({"name": "ok", "rollout_percent": True}, "rollout_percent"),
        ({"name": "ok", "enabled": "yes"}, "enabled"),
        ({"name": "ok", "targeting_keys": "u1"}, "targeting_keys"),
        ({"name": "ok", "targeting_keys": ["x" * 257]}, "targeting_keys.0"),
        ({"name": "ok", "targeting_keys": [1]}, "targeting_keys.0"),
        ({"name": "ok", "colour": "red"}, "colour"),
        ({"enabled": True}, "name"),
    ],
)
def test_bad_definitions_are_refused_and_change_nothing(data, field):
    with pytest.raises(InvalidFlagDefinition) as error:
        flag_create(data=data, actor=SYSTEM)
    assert error.value.field == field
    assert not Flag.objects.exists() and not AuditEvent.objects.exists()


def test_create_update_toggle_are_audited(django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        flag_create(data={"name": "chat", "owner": "chat-team"}, actor=SYSTEM)
        flag_update(name="chat", changes={"enabled": True, "rollout_percent": 20}, actor=SYSTEM)
        flag_toggle(name="chat", changes=None, actor=SYSTEM)
    events = list(AuditEvent.objects.order_by("id"))
    assert [e.action for e in events] == ["flag.create", "flag.update", "flag.toggle"]
    assert events[1].before["rollout_percent"] == 0 and events[1].after["rollout_percent"] == 20
    assert events[2].before["enabled"] is True and events[2].after["enabled"] is False


def test_an_update_that_changes_nothing_records_nothing():
    flag_create(data={"name": "chat", "enabled": True}, actor=SYSTEM)
    flag_update(name="chat", changes={"enabled": True}, actor=SYSTEM)
    assert AuditEvent.objects.filter(action="flag.update").count() == 0


def test_unknown_flag():
    with pytest.raises(FlagNotFound):
        flag_update(name="nope", changes={"enabled": True}, actor=SYSTEM)
    with pytest.raises(FlagNotFound):
        flag_toggle(name="nope", changes=None, actor=SYSTEM)


def test_a_change_reaches_the_snapshot_after_commit(django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        flag_create(data={"name": "chat", "enabled": True, "rollout_percent": 100}, actor=SYSTEM)
    assert current().flags["chat"].enabled is True
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        flag_update(name="chat", changes={"enabled": False}, actor=SYSTEM)
    # Not committed yet (callbacks held back): the snapshot still serves the committed state.
    assert current().flags["chat"].enabled is True
    for callback in callbacks:
        callback()
    assert current().flags["chat"].enabled is False


def test_the_control_plane_obeys_its_own_flags(django_capture_on_commit_callbacks):
    assert is_on("external_alerts") is False  # missing: the default
    assert is_on("external_alerts", default=True) is True
    with django_capture_on_commit_callbacks(execute=True):
        flag_create(data={"name": "external_alerts", "enabled": True, "rollout_percent": 100}, actor=SYSTEM)
        flag_create(data={"name": "per_user", "enabled": True, "rollout_percent": 50}, actor=SYSTEM)
    assert is_on("external_alerts") is True
    assert is_on("per_user") is False  # needs a key: the default


def test_waffle_entry_points_use_the_same_rule(rf, operator, django_capture_on_commit_callbacks):
    import waffle

    from flags.evaluation import bucket

    flag_create(data={"name": "chat", "enabled": True, "rollout_percent": 50}, actor=SYSTEM)
    request = rf.get("/")
    request.user = operator
    expected = bucket("chat", str(operator.pk)) <= 50
    # Same answer every time for the same user (keyed by user id, not a random cookie).
    assert {waffle.flag_is_active(request, "chat") for _ in range(20)} == {expected}
    with django_capture_on_commit_callbacks(execute=True):  # waffle clears its cache on commit
        flag_update(name="chat", changes={"targeting_keys": [str(operator.pk)]}, actor=SYSTEM)
    assert waffle.flag_is_active(request, "chat") is True
    assert waffle.flag_is_active(request, "missing") is False
