"""The ground and the composition root, in one package (renaming either would change
``DJANGO_SETTINGS_MODULE`` and the ``controlplane`` migrations' app label).

The composition root wires the apps together and is the only code that may import all of them:
``controlplane.settings``, ``controlplane.urls``, ``controlplane.celery``, ``controlplane.wsgi`` and
``controlplane.asgi``. Everything else here is the ground the apps stand on (tokens, audit events,
request context, logging, redaction, local copies, API helpers, and the registries the
apps fill from their ``apps.py``: readiness, retention, dashboard panels); the ground imports no app.
The contracts in ``pyproject.toml`` (``lint-imports``) hold both to that; ``docs/architecture.md``
draws the map.
"""

from __future__ import annotations

from .celery import app as celery_app

__all__ = ["celery_app"]
