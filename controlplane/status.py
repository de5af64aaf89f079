"""One vocabulary for every status a page or the admin shows: a tone (its colour), an icon and words.

Deployments, step runs, backups, verifications, checks, alerts and deliveries each have their own
``TextChoices``; many share a value ("failed", "running"). The ground cannot import the apps, so the
table is keyed by value, and a value means the same everywhere: "failed" is bad whoever failed. A value
missing here renders with the ``tone-unknown`` class, and a test that walks every status choice of the
apps fails until it is added.

Pages use ``{% status_pill value label %}`` (``controlplane/templatetags/status.py``); the admin uses
``admin_status("status")`` in ``list_display``: both render :func:`status_pill`'s markup.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.utils.html import format_html
from django.utils.safestring import SafeString

OK, WARN, BAD, RUNNING, NEUTRAL = "ok", "warn", "bad", "running", "neutral"
TONES = (OK, WARN, BAD, RUNNING, NEUTRAL)
UNKNOWN = "unknown"

# value -> (tone, icon). The icon is decoration (aria-hidden); the words carry the meaning.
STATUSES: dict[str, tuple[str, str]] = {
    # finished well
    "succeeded": (OK, "✓"),
    "passed": (OK, "✓"),
    "pass": (OK, "✓"),
    "sent": (OK, "✓"),
    "resolved": (OK, "✓"),
    "ready": (OK, "✓"),
    "up": (OK, "✓"),  # a job monitor pinged on time
    "applied": (OK, "✓"),  # a scheduled flag change made at its time
    "verified": (OK, "✓"),  # a backup copy read back with the backup's size and sha256
    # under way
    "queued": (RUNNING, "…"),
    "running": (RUNNING, "↻"),
    "uploading": (RUNNING, "↑"),  # a backup copy on its way to an off-site storage
    "rolling_back": (RUNNING, "↺"),
    # needs a look
    "warn": (WARN, "!"),
    "warning": (WARN, "!"),
    "pending": (WARN, "!"),
    "rolled_back": (WARN, "↶"),  # the release failed, the previous one runs again: not a success
    "at_risk": (WARN, "!"),
    "late": (WARN, "!"),  # a job monitor past its schedule, within its grace time
    "inconclusive": (WARN, "?"),  # an analysis measurement with too little traffic to judge
    # broken
    "failed": (BAD, "✕"),
    "fail": (BAD, "✕"),
    "rollback_failed": (BAD, "✕"),
    "firing": (BAD, "✕"),
    "error": (BAD, "✕"),
    "critical": (BAD, "✕"),
    "down": (BAD, "✕"),  # a job monitor past its grace time, or its job failed
    # nothing to say yet, or on purpose
    "cancelled": (NEUTRAL, "⊘"),
    "skipped": (NEUTRAL, "»"),
    "": (NEUTRAL, "–"),  # a backup not verified (yet)
    "info": (NEUTRAL, "i"),
    "waiting": (NEUTRAL, "…"),
    "no_backup_yet": (NEUTRAL, "–"),
    "new": (NEUTRAL, "–"),  # a job monitor not pinged yet
    "paused": (NEUTRAL, "⏸"),
}


def tone(value: Any) -> str:
    """``ok``, ``warn``, ``bad``, ``running``, ``neutral``; ``unknown`` for a value not in the table."""
    found = STATUSES.get("" if value is None else str(value))
    return found[0] if found else UNKNOWN


def words(value: Any) -> str:
    text = "" if value is None else str(value)
    return text.replace("_", " ") if text else "none"


def status_pill(value: Any, label: Any = None) -> SafeString:
    """``<span class="pill tone-bad" data-status="failed"><span class="pill-icon">✕</span> failed</span>``.

    ``label`` is the words to show (a choice's display, "verifying"); the value's own words by default.
    """
    key = "" if value is None else str(value)
    found = STATUSES.get(key)
    tone_name, icon = found if found else (UNKNOWN, "?")
    return format_html(
        '<span class="pill tone-{}" data-status="{}"><span class="pill-icon" aria-hidden="true">{}</span> {}</span>',
        tone_name,
        key,
        icon,
        words(key) if label in (None, "") else label,
    )


def admin_status(field: str, description: str | None = None) -> Callable[[Any], SafeString]:
    """A ``list_display`` entry showing ``field`` as a pill, sortable by the field."""
    from django.contrib import admin

    @admin.display(description=description or field.replace("_", " "), ordering=field)
    def show(obj: Any) -> SafeString:
        display = getattr(obj, f"get_{field}_display", None)
        return status_pill(getattr(obj, field), display() if display else None)

    show.__name__ = f"{field}_pill"
    return show


class StatusPillsAdmin:
    """A ModelAdmin mixin: the admin's stylesheet for the pills ``admin_status`` renders (the admin does
    not load the pages' stylesheet, and the Content-Security-Policy allows no inline style)."""

    class Media:
        css = {"all": ["css/admin-status.css"]}
