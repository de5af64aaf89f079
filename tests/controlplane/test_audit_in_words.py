"""describe_change: an audit event's before and after in words, the one place pages and admin get it."""

from __future__ import annotations

import pytest

from controlplane.audit import MAX_SHOWN_VALUE, describe_change


@pytest.mark.parametrize(
    ("before", "after", "words"),
    [
        ({"rollout_percent": 10}, {"rollout_percent": 25}, "rollout 10 % → 25 %"),
        ({"enabled": False}, {"enabled": True}, "turned on"),
        ({"enabled": True}, {"enabled": False}, "turned off"),
        ({"active": True}, {"active": False}, "turned off"),  # a waffle switch
        ({"targeting_keys": ["bob"]}, {"targeting_keys": ["vip"]}, "targeting keys: added vip; removed bob"),
        ({"targeting_keys": []}, {"targeting_keys": ["a", "b"]}, "targeting keys: added a, b"),
        ({"owner": ""}, {"owner": "growth"}, "owner none → growth"),
        ({"owner": "growth"}, {"owner": "chat"}, "owner growth → chat"),
        ({"description": "x"}, {"description": "y" * (MAX_SHOWN_VALUE + 1)}, "description changed"),
        ({"is_staff": False}, {"is_staff": True}, "is staff no → yes"),
        # Several at once: the switch first, then the rollout, then the rest by name.
        (
            {"enabled": False, "rollout_percent": 0, "owner": "a"},
            {"enabled": True, "rollout_percent": 50, "owner": "b"},
            "turned on; rollout 0 % → 50 %; owner a → b",
        ),
        ({"rollout_percent": 5, "owner": "a"}, {"rollout_percent": 5, "owner": "a"}, "no change"),
        # A field on one side only is unknown on the other, not a change.
        ({"rollout_percent": 5}, {"rollout_percent": 5, "new_field": 1}, "no change"),
        ("no such", "thing", ""),
        (None, None, ""),
    ],
)
def test_describe_change(before, after, words):
    assert describe_change(before, after, "flag.update") == words


@pytest.mark.parametrize(
    ("action", "before", "after", "words"),
    [
        ("flag.create", None, {"name": "chat", "enabled": True, "rollout_percent": 30}, "created (on, rollout 30 %)"),
        ("flag.delete", {"name": "chat", "enabled": False, "rollout_percent": 0}, None, "deleted (off, rollout 0 %)"),
        ("backup_target.create", None, {"name": "shop"}, "created"),
        # One side that is not a create or a delete: its facts, long ones cut.
        ("auth.login", None, {"ip_address": "203.0.113.7"}, "ip address 203.0.113.7"),
        ("deployment.cancel", None, {"status": "cancelled"}, "status cancelled"),
        ("backup.restore", None, {"into": "x" * 100, "ms": 12}, f"into {'x' * MAX_SHOWN_VALUE}…; ms 12"),
        ("notificationchannel.test", None, {"delivery": [1, 2]}, "delivery (2 items)"),
        ("backup.requested", None, None, ""),
    ],
)
def test_describe_one_sided(action, before, after, words):
    assert describe_change(before, after, action) == words
