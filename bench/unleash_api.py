"""Unleash's client API and what local evaluation buys, each figure against a peer measured in the same run.

Through gunicorn on loopback (2 sync workers, bench._settings) with 100 flags in production (each with a
rollout, two constraints, a segment on a third of them, and two variants on a quarter), a flags:read
token sent bare as Unleash's SDKs send it:

1. ``GET /api/client/features`` with the ETag the SDK keeps (``If-None-Match``), answered 304, under
   wrk -t2 -c16 against the trivial JSON view /bench/trivial of the same server (alternating rounds, as
   bench/flags.py and bench/job_pings.py do; the ratio is the median of each round's, as
   ``_harness.paired_ratio`` takes it). Goal: >= 0.9 of the trivial view's req/s.
2. The same path answered 200 (the whole document for 100 flags, as an SDK's first fetch or after a
   change): p50, p99 and req/s under the same load, beside the trivial view, and its size.
3. One evaluation: Unleash's Python SDK (UnleashClient, its Rust engine) pointed at the server, deciding
   locally (``is_enabled`` of a flag with constraints, a new user each call), against one OFREP round
   trip per evaluation (``POST /ofrep/v1/evaluate/flags/{key}`` on a kept-alive connection, what the
   OpenFeature OFREP provider does per flag). Median of 3 repetitions of each.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench._harness import Load, gunicorn, median_load, migrate, paired_ratio, wrk  # noqa: E402
from bench.flags import manage, revoke  # noqa: E402

SETTINGS = "bench._settings"
FLAGS = 100
GOAL_304 = 0.9
PREFIX = "bench_unleash_"
FLAG = f"{PREFIX}007"  # a rollout with two constraints, as most of the 100
CONTEXT = {"plan": "premium", "country": "DE", "appVersion": "2.4.0"}
LOCAL_CALLS = 20000
OFREP_CALLS = 2000
REPEATS = 3


def _state(index: int) -> dict[str, object]:
    constraints = [
        {"field": "plan", "operator": "IN", "values": ["premium", "team"]},
        {"field": "appVersion", "operator": "SEMVER_GTE", "values": ["2.0.0"]},
    ]
    strategy: dict[str, object] = {
        "kind": "flexibleRollout",
        "rollout": 10 + index % 80,
        "constraints": constraints,
        "segments": ["eu"] if index % 3 == 0 else [],
    }
    if index % 4 == 0:
        strategy["variants"] = [
            {"name": "a", "weight": 1, "value": "A", "payload_type": "string"},
            {"name": "b", "weight": 1, "value": "B", "payload_type": "string"},
        ]
    return {"enabled": True, "strategies": [strategy], "variants": []}


def prepare() -> str:
    """Exactly the 100 benchmark flags (others removed) and a new flags:read token."""
    migrate(SETTINGS)
    document = {
        "segments": [{"name": "eu", "constraints": [{"field": "country", "operator": "IN", "values": ["DE", "FR"]}]}],
        "flags": [
            {"name": f"{PREFIX}{i:03}", "type": "string" if i % 4 == 0 else "boolean",
             "environments": {"production": _state(i)}}
            for i in range(FLAGS)
        ],
    }  # fmt: skip
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump(document, handle)
    try:
        manage("import_flags", handle.name)
    finally:
        os.unlink(handle.name)
    names = [flag["name"] for flag in document["flags"]]  # type: ignore[index]
    manage(
        "shell",
        "--no-imports",
        "-c",
        "from controlplane.audit import Actor\n"
        "from flags.models import Flag\n"
        "from flags.services import flag_delete\n"
        f"for name in Flag.objects.exclude(name__in={names!r}).values_list('name', flat=True):\n"
        "    flag_delete(name=name, actor=Actor.system('bench/unleash_api.py'))\n",
    )
    return manage("create_api_token", "bench-unleash", "--scopes", "flags:read").strip().splitlines()[-1]


def fetch(url: str, token: str) -> tuple[str, int]:
    """(ETag, size) of the features document; exits unless it holds the 100 flags."""
    request = urllib.request.Request(url + "/api/client/features", headers={"Authorization": token})  # noqa: S310
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback
        body = response.read()
        etag = response.headers["ETag"]
    names = [feature["name"] for feature in json.loads(body)["features"]]
    if len(names) != FLAGS or not etag:
        sys.exit(f"bench: the features document has {len(names)} flags and ETag {etag!r}")
    return etag, len(body)


def alternate(
    url: str, runs: dict[str, tuple[str, dict[str, str]]], *, rounds: int, seconds: int
) -> dict[str, list[Load]]:
    """wrk on each (path, headers) in turn, the order reversed every other round; each round's loads."""
    results: dict[str, list[Load]] = {label: [] for label in runs}
    labels = list(runs)
    for label in labels:
        wrk(url + runs[label][0], seconds=2, headers=runs[label][1])  # warm up
    for index in range(rounds):
        for label in labels if index % 2 == 0 else labels[::-1]:
            path, headers = runs[label]
            load = wrk(url + path, seconds=seconds, headers=headers)
            results[label].append(load)
            print(f"  round {index + 1:2} {label:10} p50 {load.p50_ms:6.2f} ms  {load.requests_per_second:8,.0f} req/s")
    return results


def time_local(url: str, token: str) -> float:
    """Microseconds per is_enabled in the Unleash SDK, which fetched the flags from the server once."""
    from UnleashClient import UnleashClient
    from UnleashClient.utils import InstanceAllowType

    with tempfile.TemporaryDirectory() as cache:
        client = UnleashClient(
            url=url + "/api",
            app_name="bench",
            instance_id="bench-local",
            custom_headers={"Authorization": token},
            disable_metrics=True,
            disable_registration=True,
            cache_directory=cache,
            multiple_instance_mode=InstanceAllowType.SILENTLY_ALLOW,
        )
        client.initialize_client()
        try:
            if len(client.feature_definitions()) != FLAGS:
                sys.exit("bench: the SDK did not load the 100 flags")
            contexts = [{"userId": f"user-{i}", "properties": CONTEXT} for i in range(LOCAL_CALLS)]
            figures = []
            for _ in range(REPEATS):
                start = time.perf_counter()
                for context in contexts:
                    client.is_enabled(FLAG, context)
                figures.append((time.perf_counter() - start) / LOCAL_CALLS * 1e6)
        finally:
            client.destroy()
    return statistics.median(figures)


def time_ofrep(url: str, token: str) -> float:
    """Microseconds per OFREP evaluation of one flag, one POST each on a kept-alive connection."""
    host = url.split("//", 1)[1]
    connection = http.client.HTTPConnection(host, timeout=10)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    path = f"/ofrep/v1/evaluate/flags/{FLAG}"
    bodies = [json.dumps({"context": {"targetingKey": f"user-{i}", **CONTEXT}}) for i in range(OFREP_CALLS)]
    figures = []
    try:
        for _ in range(REPEATS):
            start = time.perf_counter()
            for body in bodies:
                connection.request("POST", path, body=body, headers=headers)
                response = connection.getresponse()
                answer = response.read()
                if response.status != 200:
                    sys.exit(f"bench: OFREP answered {response.status} {answer[:200]!r}")
            figures.append((time.perf_counter() - start) / OFREP_CALLS * 1e6)
    finally:
        connection.close()
    return statistics.median(figures)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="wrk rounds of each path")
    parser.add_argument("--seconds", type=int, default=10, help="seconds of wrk load per round")
    args = parser.parse_args()

    token = prepare()
    try:
        with gunicorn(SETTINGS, env={"LOG_FORMAT": "json"}) as url:
            etag, size = fetch(url, token)
            bare = {"Authorization": token}
            loads = alternate(
                url,
                {
                    "trivial": ("/bench/trivial", {}),
                    "304": ("/api/client/features", {**bare, "If-None-Match": etag}),
                    "200": ("/api/client/features", bare),
                },
                rounds=args.rounds,
                seconds=args.seconds,
            )
            local_us = time_local(url, token)
            ofrep_us = time_ofrep(url, token)
    finally:
        revoke(token)
    trivial, not_modified, full = (median_load(loads[label]) for label in ("trivial", "304", "200"))
    # Per round (the three measured back to back), then the median: a shared machine's load moves
    # between rounds far more than within one.
    ratio = paired_ratio(loads["304"], loads["trivial"], "requests_per_second")
    full_ratio = paired_ratio(loads["200"], loads["trivial"], "requests_per_second")
    print(
        f"/api/client/features 304 (gunicorn, 2 sync workers): p50 {not_modified.p50_ms:.2f} ms, "
        f"{not_modified.requests_per_second:,.0f} req/s vs trivial view p50 {trivial.p50_ms:.2f} ms, "
        f"{trivial.requests_per_second:,.0f} req/s: {ratio:.2f} of its throughput, median of the rounds' ratios "
        f"(goal >= {GOAL_304})"
    )
    print(
        f"/api/client/features 200 with {FLAGS} flags ({size / 1024:.0f} KiB): p50 {full.p50_ms:.2f} ms, "
        f"p99 {full.p99_ms:.2f} ms, {full.requests_per_second:,.0f} req/s "
        f"({full_ratio:.2f} of the trivial view's)"
    )
    print(
        f"one evaluation of {FLAG}: Unleash SDK locally {local_us:.1f} us vs one OFREP round trip {ofrep_us:.0f} us "
        f"on loopback: local is {ofrep_us / local_us:,.0f}x faster"
    )


if __name__ == "__main__":
    main()
