"""The demo environment's steps: local, harmless, a few seconds each (``python -m deployments.demo ACTION VERSION``).

``backend`` fails for a version that starts with ``bad-``, so that an operator on a fresh machine can
watch a deployment roll back.
"""

from __future__ import annotations

import sys
import time

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
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
