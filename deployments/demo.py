"""The demo environment's steps: local, harmless, a few seconds each (``python -m deployments.demo ACTION VERSION``).

``backend`` fails for a version that starts with ``bad-``, so that an operator on a fresh machine can
watch a deployment roll back. With ``DEMO_PRODUCT_DIR`` set (the demo pipeline sets it to
``{var_dir}/demo-product``), ``backend`` appends the version it switched to to the ``releases`` file there
and ``backend-rollback`` takes that version off again: the demo product (``python -m demo_product``)
serves the last line, so ``slow-*`` and ``flaky-*`` show on its metrics.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

MESSAGES = {
    "health": ["checking the demo product's health", "api: ok", "web: ok"],
    "migrate": ["applying migrations for {version}", "0042_coaching_sessions_index: ok"],
    "migrate-rollback": ["reverting migrations of {version}", "0042_coaching_sessions_index: reverted"],
    "backend": ["building backend {version}", "uploading image", "switching traffic to {version}"],
    "backend-rollback": ["switching backend traffic back to the previous release"],
    "frontend": ["building frontend {version}", "publishing static assets", "promoting {version}"],
    "frontend-rollback": ["promoting the previous frontend release"],
}


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in MESSAGES:
        print(f"usage: python -m deployments.demo {{{','.join(MESSAGES)}}} VERSION", file=sys.stderr)  # noqa: T201 - a script
        return 2
    action, version = argv
    for line in MESSAGES[action]:
        print(line.format(version=version), flush=True)  # noqa: T201
        time.sleep(0.4)
    if action == "backend" and version.startswith("bad-"):
        print(f"backend {version} failed its smoke test: HTTP 500 from /api/health", flush=True)  # noqa: T201
        return 1
    releases = os.environ.get("DEMO_PRODUCT_DIR")
    if releases and action in ("backend", "backend-rollback"):
        record(Path(releases) / "releases", action, version)
    return 0


def record(releases: Path, action: str, version: str) -> None:
    """``backend`` appends the version; ``backend-rollback`` removes it if it is the one serving (a backend
    that failed before switching left the previous one serving, which stays)."""
    releases.parent.mkdir(parents=True, exist_ok=True)
    try:
        lines = [line for line in releases.read_text().splitlines() if line.strip()]
    except FileNotFoundError:
        lines = []
    if action == "backend":
        lines.append(version)
    elif lines and lines[-1] == version:
        lines.pop()
    temporary = releases.with_name(f".{releases.name}.{os.getpid()}")
    temporary.write_text("".join(f"{line}\n" for line in lines[-100:]))
    os.replace(temporary, releases)  # the demo product reads it each second: never half-written


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
