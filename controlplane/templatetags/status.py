"""``{% load status %}``: every page shows a status the same way (controlplane/status.py)."""

from __future__ import annotations

from typing import Any

from django import template
from django.utils.safestring import SafeString

from controlplane import status

register = template.Library()


@register.simple_tag
def status_pill(value: Any, label: Any = None) -> SafeString:
    """``{% status_pill deployment.status deployment.get_status_display %}``: icon, words, tone colour."""
    return status.status_pill(value, label)


@register.filter
def tone(value: Any) -> str:
    """``class="tone-{{ run.status|tone }}"`` for a row or a tile that takes the status's colour."""
    return status.tone(value)


@register.simple_tag
def dry_run_badge() -> SafeString:
    """The mark of a dry run wherever a deployment is listed: it ran nothing and is never a release."""
    return SafeString('<span class="badge dry-run" title="ran nothing; never counts as a release">dry run</span>')
