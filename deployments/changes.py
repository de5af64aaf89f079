"""Deployments' part in ``controlplane.changes``: which of its audit events the charts and alerts show,
in words. A run's start, the start of its rollback and its end are changes; a request (queued, nothing
moved yet), a cancel request and a dry run are not."""

from __future__ import annotations

from typing import Any

PREFIX = "deployment."
NOT_CHANGES = (
    "deployment.deploy",  # requests: the run's start is the change
    "deployment.rollback",
    "deployment.recovery",
    "deployment.dry_run",
    "deployment.cancel",  # asked for; the run's end says what came of it
)
VERBS = {
    "started": "started",
    "rolling_back": "rolling back",
    "reaped": "lost its worker: rolling back",
    "succeeded": "succeeded",
    "failed": "failed",
    "rolled_back": "rolled back",
    "rollback_failed": "rollback failed",
    "cancelled": "cancelled",
}


def change_words(action: str, label: str, before: Any, after: Any) -> str:
    """ "deployment #12 of v2.1 to production: started"; older events (no ``after``) by their label."""
    verb = action.removeprefix(PREFIX)
    verb = VERBS.get(verb, verb.replace("_", " "))
    number = label.split(" ", 1)[0] if label.startswith("#") else label
    if not isinstance(after, dict):
        return f"deployment {label}: {verb}"
    if after.get("type") == "recovery":
        what = f"recovery plan {after.get('recovery_type', '?')}"
    elif after.get("type") == "rollback":
        what = f"rollback to {after.get('version', '?')}"
    else:
        what = f"{after.get('version', '?')}"
    return f"deployment {number} of {what} to {after.get('environment', '?')}: {verb}"
