"""Django system checks (``manage.py check --deploy``) for production readiness: one per app, over
the readiness items the app registered (controlplane.readiness.register_items)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.core import checks

_CHECKS: dict[str, Callable[..., list[checks.CheckMessage]]] = {}


def app_check(app_label: str) -> Callable[..., list[checks.CheckMessage]]:
    """The system check of ``app_label``'s items: ids ``<app>.E001`` (fail) and ``<app>.W001`` (warn)."""
    if app_label not in _CHECKS:

        def production_readiness(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
            from controlplane.readiness import FAIL, WARN, readiness_items

            messages: list[checks.CheckMessage] = []
            for number, item in enumerate(readiness_items(app_label), start=1):
                if item.status == FAIL:
                    messages.append(checks.Error(item.message, hint=item.hint, id=f"{app_label}.E{number:03d}"))
                elif item.status == WARN:
                    messages.append(checks.Warning(item.message, hint=item.hint, id=f"{app_label}.W{number:03d}"))
            return messages

        _CHECKS[app_label] = production_readiness
    return _CHECKS[app_label]
