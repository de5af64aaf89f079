"""Settings for the benchmarks: the control plane's own, plus a trivial view to compare against.

``BENCH_WITHOUT`` names middleware (comma-separated dotted paths) to leave out, so the same process
layout can be measured with and without a piece.
"""

from __future__ import annotations

import os

from controlplane.settings import *  # noqa: F403
from controlplane.settings import MIDDLEWARE

_without = {name for name in os.environ.get("BENCH_WITHOUT", "").split(",") if name}
MIDDLEWARE = [name for name in MIDDLEWARE if name not in _without]
ROOT_URLCONF = "bench._urls"
