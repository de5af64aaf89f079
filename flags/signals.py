"""What flags tells the rest of the house: a flag's state in one environment changed.

``flag_changed`` is sent after the change commits (never for a change rolled back), once per change of
a state by an operator, a page, the API, a schedule or a pipeline, with: ``flag`` and ``environment``
(names), ``before`` and ``after`` (one line each, who the flag is on for), ``actor`` (the audit's label)
and ``action`` (the audit's action). Alerting connects it to tell the channels chosen for the
environment; flags itself never waits on a receiver's outcome.
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction
from django.dispatch import Signal

logger = logging.getLogger(__name__)

flag_changed = Signal()


def state_in_words(state: dict[str, Any] | None) -> str:
    """An audit's state of one environment (``flags.services._audit_state``) in one line."""
    if not state or not state.get("enabled"):
        return "off"
    if "strategies" in state:
        count = len(state["strategies"])
        return f"on where any of {count} strateg{'y' if count == 1 else 'ies'} matches" if count else "on for everyone"
    percent, named = state.get("rollout_percent", 0), len(state.get("targeting_keys") or [])
    users = f"{named} named user{'s' if named != 1 else ''}"
    if percent == 100:
        return "on for everyone"
    if percent == 0:
        return f"on for {users} only" if named else "off (0 % rollout)"
    return f"on for {percent} % of users" + (f" and {users}" if named else "")


def announce(
    *, flag: str, environment: str, before: dict[str, Any] | None, after: dict[str, Any], actor: str, action: str
) -> None:
    """Send ``flag_changed`` once the current transaction commits. A receiver that fails is logged and
    does not undo the change (it is made); the others still hear of it."""
    words_before, words_after = state_in_words(before), state_in_words(after)

    def send() -> None:
        for receiver, result in flag_changed.send_robust(
            sender="flags",
            flag=flag,
            environment=environment,
            before=words_before,
            after=words_after,
            actor=actor,
            action=action,
        ):
            if isinstance(result, Exception):
                logger.error("flag_changed receiver %s failed: %s", getattr(receiver, "__name__", receiver), result)

    transaction.on_commit(send)
