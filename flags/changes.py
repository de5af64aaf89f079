"""Flags' part in ``controlplane.changes``: every change to a flag is one on the charts, but scheduling
one (nothing moved yet: the applied change is recorded when it happens)."""

from __future__ import annotations

from typing import Any

from controlplane.audit import describe_change
from controlplane.models import DEFAULT_FLAGS_ENVIRONMENT

PREFIX = "flag."
NOT_CHANGES = ("flag.schedule", "flag.schedule.cancel", "flag.schedule.skip")


def change_words(action: str, label: str, before: Any, after: Any) -> str:
    """ "flag new_checkout in production: rollout 10 % → 25 %"."""
    state = after if isinstance(after, dict) else before if isinstance(before, dict) else {}
    environment = state.get("environment", DEFAULT_FLAGS_ENVIRONMENT)
    words = describe_change(before, after, action) or action.removeprefix(PREFIX).replace("_", " ")
    return f"flag {label} in {environment}: {words}"
