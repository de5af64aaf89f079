"""The alert state machine without a database: every transition of alerting.state.next_state."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from alerting.state import (
    FIRING,
    NOTHING,
    OPEN,
    PENDING,
    RESOLVE,
    RESOLVED,
    TOUCH,
    UPDATE,
    AlertSnapshot,
    Context,
    Notification,
    RuleSpec,
    SilenceSpec,
    Transition,
    breaches,
    next_state,
    suppression_reason,
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
LATENCY = RuleSpec(id=7, kind="p95_latency_ms", threshold=500, for_evaluations=1, repeat_interval=timedelta(hours=1))
HOLD_THREE = RuleSpec(id=8, kind="error_rate", threshold=5, for_evaluations=3, repeat_interval=timedelta(hours=1))
CHECK = RuleSpec(id=9, kind="check_status", threshold=3)
HEARD = Context()


def firing(**changes) -> AlertSnapshot:
    values = {"state": FIRING, "consecutive": 4, "fired_at": NOW - timedelta(hours=3)}
    values["last_notified_at"] = NOW - timedelta(hours=2)
    return AlertSnapshot(**{**values, **changes})


def silence(**changes) -> SilenceSpec:
    values = {"starts_at": NOW - timedelta(minutes=5), "ends_at": NOW + timedelta(hours=1), "reason": "upgrade"}
    return SilenceSpec(**{**values, **changes})


# --- No data, no alert ---------------------------------------------------------------------------


def test_no_data_and_no_alert_does_nothing():
    assert next_state(None, LATENCY, None, NOW, HEARD) == Transition(NOTHING)


def test_no_data_leaves_an_open_alert_as_it_is():
    alert = firing()
    transition = next_state(alert, LATENCY, None, NOW, HEARD)
    assert transition == Transition(TOUCH, state=FIRING, consecutive=4)
    assert transition.notification is None


def test_a_value_within_the_threshold_and_no_alert_does_nothing():
    assert next_state(None, LATENCY, 500.0, NOW, HEARD) == Transition(NOTHING)


# --- The condition: above the threshold; a check's failures reach it ------------------------------


def test_the_condition_is_above_the_threshold_and_a_check_status_reaches_it():
    assert (breaches(LATENCY, 500.0), breaches(LATENCY, 500.1)) == (False, True)
    assert (breaches(CHECK, 2.0), breaches(CHECK, 3.0)) == (False, True)


# --- Pending, then firing after the for count --------------------------------------------------


def test_a_breach_opens_a_pending_alert_when_the_rule_holds_for_several_evaluations():
    transition = next_state(None, HOLD_THREE, 9.0, NOW, HEARD)
    assert transition == Transition(OPEN, state=PENDING, consecutive=1)


def test_a_pending_alert_counts_and_fires_on_the_evaluation_that_reaches_the_for_count():
    second = next_state(AlertSnapshot(PENDING, 1), HOLD_THREE, 9.0, NOW, HEARD)
    assert second == Transition(UPDATE, state=PENDING, consecutive=2)
    third = next_state(AlertSnapshot(PENDING, 2), HOLD_THREE, 9.0, NOW, HEARD)
    assert (third.action, third.state, third.consecutive, third.fired) == (UPDATE, FIRING, 3, True)
    assert third.notification == Notification(FIRING, repeat=False)
    assert third.notified


def test_a_rule_that_holds_once_fires_at_the_first_breach():
    transition = next_state(None, LATENCY, 900.0, NOW, HEARD)
    assert (transition.action, transition.state, transition.consecutive, transition.fired) == (OPEN, FIRING, 1, True)
    assert transition.notification == Notification(FIRING, repeat=False)
    assert transition.notified


# --- Resolving ------------------------------------------------------------------------------------


def test_an_announced_firing_alert_resolves_and_says_so_whatever_the_cooldown():
    alert = firing(last_notified_at=NOW - timedelta(minutes=1))
    transition = next_state(alert, LATENCY, 100.0, NOW, HEARD)
    assert transition == Transition(
        RESOLVE, state=RESOLVED, consecutive=0, ends_firing=True,
        notification=Notification(RESOLVED, repeat=False), notified=True,
    )  # fmt: skip


def test_a_pending_alert_resolves_quietly():
    transition = next_state(AlertSnapshot(PENDING, 2), HOLD_THREE, 1.0, NOW, HEARD)
    assert transition == Transition(RESOLVE, state=RESOLVED)


def test_a_firing_alert_that_was_never_announced_resolves_quietly():
    transition = next_state(firing(last_notified_at=None), LATENCY, 100.0, NOW, HEARD)
    assert transition == Transition(RESOLVE, state=RESOLVED, ends_firing=True)


# --- Reminders and the cooldown -----------------------------------------------------------------


def test_a_firing_alert_is_reminded_of_once_the_repeat_interval_has_passed():
    transition = next_state(firing(), LATENCY, 900.0, NOW, HEARD)
    assert (transition.action, transition.state, transition.consecutive, transition.fired) == (UPDATE, FIRING, 5, False)
    assert transition.notification == Notification(FIRING, repeat=True)
    assert transition.notified


def test_no_reminder_within_the_repeat_interval():
    transition = next_state(firing(last_notified_at=NOW - timedelta(minutes=59)), LATENCY, 900.0, NOW, HEARD)
    assert transition == Transition(UPDATE, state=FIRING, consecutive=5)


def test_an_alert_that_fires_again_within_the_interval_of_its_keys_last_notification_is_not_announced():
    """The cooldown is per target: a resolved alert of the same key notified 10 minutes ago holds it back."""
    context = Context(last_notified_at=NOW - timedelta(minutes=10))
    transition = next_state(None, LATENCY, 900.0, NOW, context)
    assert (transition.action, transition.state, transition.fired) == (OPEN, FIRING, True)
    assert transition.notification is None and not transition.notified
    later = next_state(AlertSnapshot(FIRING, 1, fired_at=NOW), LATENCY, 900.0, NOW + timedelta(minutes=50), context)
    assert later.notification == Notification(FIRING, repeat=True)


def test_an_acknowledged_alert_gets_no_reminder_but_its_resolution_is_announced():
    acknowledged = firing(acknowledged=True)
    assert next_state(acknowledged, LATENCY, 900.0, NOW, HEARD) == Transition(UPDATE, state=FIRING, consecutive=5)
    assert next_state(acknowledged, LATENCY, 1.0, NOW, HEARD).notification == Notification(RESOLVED, repeat=False)


# --- Suppression: the flag and silences ----------------------------------------------------------


def test_with_external_alerts_off_a_firing_is_recorded_skipped_and_starts_no_cooldown():
    transition = next_state(None, LATENCY, 900.0, NOW, Context(external_alerts=False))
    assert transition.fired
    assert transition.notification == Notification(FIRING, repeat=False, skip_reason="external_alerts is off")
    assert not transition.notified


def test_a_suppressed_reminder_is_not_recorded():
    assert next_state(firing(), LATENCY, 900.0, NOW, Context(external_alerts=False)).notification is None
    silenced = Context(silences=(silence(),))
    assert next_state(firing(), LATENCY, 900.0, NOW, silenced) == Transition(UPDATE, state=FIRING, consecutive=5)


def test_a_silenced_resolution_is_recorded_skipped():
    transition = next_state(firing(), LATENCY, 1.0, NOW, Context(silences=(silence(),)))
    assert transition.notification is not None and transition.notification.event == RESOLVED
    assert transition.notification.skip_reason.startswith("silenced until 2026-03-01 13:00 UTC: upgrade")
    assert not transition.notified


@pytest.mark.parametrize(
    ("spec", "silenced"),
    [
        ({}, True),  # every rule, every component
        ({"rule_id": 7}, True),
        ({"rule_id": 8}, False),
        ({"component": "database"}, True),
        ({"component": "cache"}, False),
        ({"rule_id": 7, "component": "cache"}, False),
        ({"starts_at": NOW + timedelta(minutes=1)}, False),  # not begun
        ({"ends_at": NOW}, False),  # over
    ],
)
def test_a_silence_covers_its_rule_and_component_while_it_lasts(spec, silenced):
    context = Context(component="database", silences=(silence(**spec),))
    transition = next_state(None, LATENCY, 900.0, NOW, context)
    assert transition.fired
    assert bool(transition.notification.skip_reason) is silenced
    assert transition.notified is not silenced


def test_the_flag_is_named_before_a_silence():
    reason = suppression_reason(rule_id=7, component="", silences=(silence(),), external_alerts=False, now=NOW)
    assert reason == "external_alerts is off"
    long = silence(reason="x" * 600)
    assert len(suppression_reason(rule_id=7, component="", silences=(long,), external_alerts=True, now=NOW)) == 500


# --- Nobody to tell ------------------------------------------------------------------------------


def test_without_a_channel_nothing_is_recorded_and_no_cooldown_starts():
    nobody = Context(has_channels=False)
    fired = next_state(None, LATENCY, 900.0, NOW, nobody)
    assert (fired.state, fired.fired, fired.notification, fired.notified, fired.unheard) == (
        FIRING, True, None, False, FIRING,
    )  # fmt: skip
    resolved = next_state(firing(), LATENCY, 1.0, NOW, nobody)
    assert (resolved.state, resolved.notification, resolved.unheard) == (RESOLVED, None, RESOLVED)
    # A reminder that would be suppressed anyway is nobody's concern either.
    assert next_state(firing(), LATENCY, 900.0, NOW, Context(has_channels=False, external_alerts=False)).unheard == ""
