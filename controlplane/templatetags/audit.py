"""``{% load audit %}``: an audit event's change in words, for pages and admin."""

from __future__ import annotations

from typing import Any

from django import template

from controlplane.audit import describe_change

register = template.Library()


@register.filter
def change_in_words(event: Any) -> str:
    """``{{ event|change_in_words }}``: "rollout 10 % → 25 %; turned on"."""
    return describe_change(event.before, event.after, event.action)
