"""In-process copies of shared data, reloaded when a version in the shared cache changes.

Hot paths (flag evaluation, token checks) read a local dict instead of the database or the cache.
Every write bumps the version in the shared cache after commit; each process looks at that version
at most once per ``CONTROLPLANE_RELOAD_INTERVAL`` seconds and reloads when it changed. With the
shared cache down, a process keeps serving its last copy, logs the fault, and reads the rows again
every CONTROLPLANE_FAULT_RELOAD_SECONDS, so a revoked token or a flag turned off still takes effect.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import Generic, TypeVar

from django.conf import settings
from django.core.cache import cache
from django.db import transaction

logger = logging.getLogger(__name__)
T = TypeVar("T")
_FAULT_LOG_INTERVAL = 30.0
_registry: weakref.WeakSet[LocalCopy] = weakref.WeakSet()


class LocalCopy(Generic[T]):
    def __init__(self, name: str, loader: Callable[[], T]) -> None:
        self.name = name
        self.version_key = f"localcopy:{name}:version"
        self._loader = loader
        self._lock = threading.Lock()
        self._data: T | None = None
        self._version: str | None = None
        self._checked_at = float("-inf")
        self._loaded_at = float("-inf")
        self._fault_logged_at = float("-inf")
        _registry.add(self)

    def get(self) -> T:
        """The current copy; looks at the shared version at most once per interval."""
        if time.monotonic() - self._checked_at < settings.CONTROLPLANE_RELOAD_INTERVAL and self._data is not None:
            return self._data
        return self._refresh()

    def _refresh(self) -> T:
        with self._lock:
            now = time.monotonic()
            if now - self._checked_at < settings.CONTROLPLANE_RELOAD_INTERVAL and self._data is not None:
                return self._data  # another thread refreshed while this one waited
            self._checked_at = now
            try:
                version = cache.get(self.version_key)
                if version is None:
                    cache.add(self.version_key, _new_version(), timeout=None)
                    version = cache.get(self.version_key)
            except Exception as exc:  # any cache client error: keep serving what we have
                self._log_fault("shared cache unreachable, serving the last %s copy: %s", exc)
                # A change made meanwhile cannot publish its version: reload when the cache answers
                # again (whatever version it holds), and until then read the rows themselves now and
                # then, so a token revoked or a flag turned off still takes effect.
                self._version = version = None
                if self._data is not None and now - self._loaded_at < settings.CONTROLPLANE_FAULT_RELOAD_SECONDS:
                    return self._data
            if self._data is not None and version is not None and version == self._version:
                return self._data
            try:
                data = self._loader()
            except Exception as exc:  # database down: keep the last copy if there is one
                if self._data is None:
                    raise
                self._log_fault("reload failed, serving the last %s copy: %s", exc)
                self._loaded_at = now  # tried: during a cache fault, again after the fault interval
                return self._data
            self._data, self._version, self._loaded_at = data, version, now
            return data

    def _log_fault(self, message: str, exc: Exception) -> None:
        now = time.monotonic()
        if now - self._fault_logged_at >= _FAULT_LOG_INTERVAL:
            self._fault_logged_at = now
            logger.error(message, self.name, exc)

    def bump(self) -> None:
        """Tell every process to reload, once the current transaction commits."""
        transaction.on_commit(self._bump_now)

    def _bump_now(self) -> None:
        try:
            cache.set(self.version_key, _new_version(), timeout=None)
        except Exception as exc:  # the change is committed; processes catch up when the cache returns
            logger.error("could not publish the new %s version: %s", self.name, exc)
        self._checked_at = self._loaded_at = float("-inf")  # this process reloads on its next read

    def forget(self) -> None:
        with self._lock:
            self._data, self._version, self._checked_at = None, None, float("-inf")
            self._loaded_at = self._fault_logged_at = float("-inf")


def _new_version() -> str:
    return os.urandom(8).hex()


def forget_all() -> None:
    """Drop every process-local copy (tests, after the database was reset under them)."""
    for copy in list(_registry):
        copy.forget()
