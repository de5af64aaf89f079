"""Each pytest-xdist worker gets servers' space of its own; loaded with ``-p tests.isolation`` (pyproject).

It runs as the worker process loads its plugins, before pytest-env and pytest-django read the
environment, so the settings see the worker's values:

- a data directory of its own (the SQLite test database, the file cache, the filesystem broker, the local
  copies), ``var/test`` becoming ``var/test-gw1``;
- a Redis database of its own (a test that empties the cache empties the whole database): the worker's
  number is added to the database index of ``REDIS_URL`` and ``TEST_REDIS_URL``.

PostgreSQL test databases get the worker's suffix from pytest-django itself, and the tests' Celery
workers take queues and node names of their own. Without xdist (one process) nothing changes.
"""

from __future__ import annotations

import os
import re

_worker = os.environ.get("PYTEST_XDIST_WORKER", "")
_number = int(_worker[2:]) if re.fullmatch(r"gw\d+", _worker) else None


def _shifted(url: str, number: int) -> str:
    """``redis://host:port/N`` with N moved by ``number`` (within Redis' 16 databases)."""
    match = re.fullmatch(r"(redis://[^/]+)/(\d+)", url)
    if match is None:
        return url
    return f"{match.group(1)}/{(int(match.group(2)) + number) % 16}"


if _number is not None:
    os.environ["CONTROLPLANE_VAR_DIR"] = f"{os.environ.get('CONTROLPLANE_VAR_DIR', 'var/test')}-{_worker}"
    if os.environ.get("REDIS_URL"):
        os.environ["REDIS_URL"] = _shifted(os.environ["REDIS_URL"], _number)
    os.environ["TEST_REDIS_URL"] = _shifted(os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15"), -_number)
