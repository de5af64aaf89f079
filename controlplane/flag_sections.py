"""Sections of a flag's page that another app contributes without flags importing it.

``flags`` imports only the ground (its OFREP hot path must answer whatever state the other apps are in),
yet a flag's page shows what other apps do with the flag: deployments' guarded rollouts. Such an app
registers a section from its ``apps.py`` (``register_flag_section``); the flag page renders every
registered one, in registration order, with ``section`` (a ``ShownSection``) in the template's context.
A section whose read raises is left out of the page and logged: the flag page still answers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.http import HttpRequest

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FlagSection:
    name: str
    template: str
    read: Callable[[HttpRequest, str], Any]  # what the template shows for the request and the flag's name


@dataclass(frozen=True)
class ShownSection:
    name: str
    template: str
    data: Any


# name -> section; a dict, so a second ready() (tests that reload apps) replaces rather than repeats.
_REGISTRY: dict[str, FlagSection] = {}


def register_flag_section(name: str, template: str, read: Callable[[HttpRequest, str], Any]) -> None:
    _REGISTRY[name] = FlagSection(name, template, read)


def flag_sections() -> list[FlagSection]:
    return list(_REGISTRY.values())


def read_flag_sections(request: HttpRequest, flag: str) -> list[ShownSection]:
    """Every registered section with what it shows of ``flag`` to ``request``'s user."""
    shown = []
    for section in _REGISTRY.values():
        try:
            shown.append(ShownSection(section.name, section.template, section.read(request, flag)))
        except Exception:  # a broken section must not take the flag page down with it
            logger.exception("flag page section %s failed for flag %s", section.name, flag)
    return shown
