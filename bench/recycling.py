"""Worker recycling under steady OFREP load: does a recycled worker stall requests?

gunicorn as production starts it (deploy/gunicorn.conf.py: the application loaded before forking, the
local copies loaded before a worker accepts), 2 sync workers, wrk -t2 -c16 on OFREP bulk evaluation of
the 14 fixture flags for one user, for ``--seconds`` (default 30). Two servers in alternating rounds:

- recycling: ``--max-requests 1000 --max-requests-jitter 200``, a worker replaced every second or so
  (far more often than production's 100,000, to see many replacements in one run);
- steady: production's settings, no worker replaced during the run (the peer).

Printed: the replacements counted in gunicorn's log, p50 and p99 of each, and two ratios: the recycling
server's p99 over its own p50 (limit 5) and its p99 over the steady server's p99 (the cost of recycling).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench._harness import Load, gunicorn, median_load, wrk  # noqa: E402
from bench.flags import SETTINGS, TARGETING_KEY, check_ofrep, prepare_flags, revoke, wrk_script  # noqa: E402

LIMIT = 5.0
CONFIG = ["-c", "deploy/gunicorn.conf.py"]
VARIANTS = {
    "recycling": [*CONFIG, "--max-requests", "1000", "--max-requests-jitter", "200"],
    "steady": CONFIG,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=2)
    options = parser.parse_args()

    names, token = prepare_flags()
    body = json.dumps({"context": {"targetingKey": TARGETING_KEY}}).encode()
    script = wrk_script(body, token)
    loads: dict[str, list[Load]] = {name: [] for name in VARIANTS}
    replaced = {name: 0 for name in VARIANTS}
    try:
        for round_number in range(options.rounds):
            order = list(VARIANTS) if round_number % 2 == 0 else list(reversed(VARIANTS))
            for name in order:
                with tempfile.TemporaryDirectory(prefix="bench-recycling-") as scratch:
                    log_path = Path(scratch) / "gunicorn.log"
                    env = {"PROMETHEUS_MULTIPROC_DIR": str(Path(scratch) / "prometheus")}
                    with gunicorn(SETTINGS, env=env, extra_args=VARIANTS[name], log_path=log_path) as url:
                        target = url + "/ofrep/v1/evaluate/flags"
                        check_ofrep(target, body, token, names)
                        wrk(target, seconds=2, script=script)  # warm up
                        booted = log_path.read_text(errors="replace").count("Booting worker")
                        load = wrk(target, seconds=options.seconds, script=script)
                        replaced[name] += log_path.read_text(errors="replace").count("Booting worker") - booted
                    loads[name].append(load)
                    print(
                        f"  {name:9} p50 {load.p50_ms:.2f} ms  p99 {load.p99_ms:.2f} ms  "
                        f"{load.requests_per_second:,.0f} req/s"
                    )
    finally:
        os.unlink(script)
        revoke(token)
    recycling, steady = median_load(loads["recycling"]), median_load(loads["steady"])
    spread = recycling.p99_ms / recycling.p50_ms
    print(
        f"Worker recycling under OFREP load ({replaced['recycling']} workers replaced in "
        f"{options.rounds} x {options.seconds} s; steady: {replaced['steady']}): p50 {recycling.p50_ms:.2f} ms, "
        f"p99 {recycling.p99_ms:.2f} ms: p99 {spread:.2f}x its p50 (limit {LIMIT:.0f}x: "
        f"{'MET' if spread <= LIMIT else 'MISSED'}); p99 {recycling.p99_ms / steady.p99_ms:.2f}x the steady "
        f"server's {steady.p99_ms:.2f} ms, {recycling.requests_per_second / steady.requests_per_second:.2f} of its "
        f"{steady.requests_per_second:,.0f} req/s"
    )


if __name__ == "__main__":
    main()
