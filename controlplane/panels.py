"""Dashboard panels that an app contributes without the dashboard importing it.

The dashboard lives in ``monitoring``, which may not import ``deployments`` (nothing but the composition
root does); an app that has something to show there registers a panel from its ``apps.py``
(``register_panel``) and the dashboard renders every registered panel, in registration order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class Panel:
    name: str
    template: str  # rendered inside the dashboard's panels, with ``panel`` (a Shown) in its context
    read: Callable[[datetime], Any]  # what the template shows, read at ``now`` on every refresh


@dataclass(frozen=True)
class Shown:
    name: str
    template: str
    data: Any


# name -> panel; a dict, so a second ready() (tests that reload apps) replaces rather than repeats.
_REGISTRY: dict[str, Panel] = {}


def register_panel(name: str, template: str, read: Callable[[datetime], Any]) -> None:
    _REGISTRY[name] = Panel(name, template, read)


def panels() -> list[Panel]:
    return list(_REGISTRY.values())


def read_panels(now: datetime) -> list[Shown]:
    """Every registered panel with what it shows at ``now``."""
    return [Shown(panel.name, panel.template, panel.read(now)) for panel in _REGISTRY.values()]
