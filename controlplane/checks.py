"""Django system checks (``manage.py check --deploy``) for production readiness."""

from __future__ import annotations

from typing import Any

from django.core import checks

from controlplane.readiness import FAIL, WARN, readiness_items


def production_readiness(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    messages: list[checks.CheckMessage] = []
    for number, item in enumerate(readiness_items(), start=1):
        if item.status == FAIL:
            messages.append(checks.Error(item.message, hint=item.hint, id=f"controlplane.E{number:03d}"))
        elif item.status == WARN:
            messages.append(checks.Warning(item.message, hint=item.hint, id=f"controlplane.W{number:03d}"))
    return messages


def register() -> None:
    checks.register(production_readiness, "controlplane", deploy=True)
