"""The changes (``controlplane.changes``) of one alert, read from the page's mapping of them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django import template

register = template.Library()


@register.filter
def changes_for(mapping: Mapping[Any, Any] | None, key: Any) -> Any:
    """``{{ alert_changes|changes_for:alert.pk }}``: the key's changes, or none."""
    return (mapping or {}).get(key, [])
