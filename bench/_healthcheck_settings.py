"""The peer of the readiness benchmark: bench._settings plus django-health-check 4.8.

In 4.x the checks are no longer apps (``health_check.db``, ``health_check.cache`` were removed): only
``health_check`` goes in INSTALLED_APPS and the checks are listed on the view (see _healthcheck_urls).
"""

from __future__ import annotations

from bench._settings import *  # noqa: F403
from bench._settings import INSTALLED_APPS

INSTALLED_APPS = [*INSTALLED_APPS, "health_check"]
ROOT_URLCONF = "bench._healthcheck_urls"
