"""Cost of flag evaluation, each figure as a ratio against a peer measured in the same run.

1. In process, warm: microseconds per call of the control plane's evaluation path for one flag and
   one user (``flags.snapshot.current().flags[name]`` then ``flags.evaluation.evaluate``, what OFREP
   does per flag; ``flags.selectors.is_on`` is timed too) against django-waffle 5.0's stock rule on
   the same 50 % flag: ``AbstractBaseFlag.is_active(Flag.get(name), request)``, i.e. waffle's own
   cache lookup and its percent rule, on the same cache backend. Measured in a child process with a
   scratch CONTROLPLANE_VAR_DIR, once on the file-based cache and once on Redis
   (redis://127.0.0.1:6379/14) when it answers. Median of 3 repetitions. Goal: ours >= 20x faster.

2. Through gunicorn on loopback under wrk -t2 -c16: OFREP bulk evaluation of the 14 flags of
   flags/fixtures/wingmanmatch.json for one user (POST /ofrep/v1/evaluate/flags with a flags:read
   token), p50, p99 and req/s, against the trivial JSON view /bench/trivial served by the same
   settings (alternating rounds, median of each). Goal: OFREP req/s >= 0.8 of the trivial view's.
   With ``--targeted``, 4 of the 14 flags get production states with strategies (3 constraints, a
   segment, a rollout) and 2 typed variants, and the context carries the attributes they read.

3. Propagation: seconds from a toggle through the API until every answer from either gunicorn
   worker is the new value (20 in a row). Limit: 1 s.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench._harness import BASE_DIR, Load, bench_env, gunicorn, median_load, migrate, redis_problem, wrk  # noqa: E402

SETTINGS = "bench._settings"
FIXTURE = BASE_DIR / "flags" / "fixtures" / "wingmanmatch.json"
PEER_FLAG = "weekly_progress_digest"  # enabled, 50 % rollout, no targeting keys: the SPLIT path
REDIS_URL = "redis://127.0.0.1:6379/14"
TARGETING_KEY = "user-123"
IN_PROCESS_GOAL = 20.0
OFREP_GOAL = 0.8
REPEATS = 3


# --- 1. In process (runs in a child process) ---------------------------------------------------------


def _time_ours(name: str, keys: list[str]) -> float:
    """µs per call of the OFREP per-flag path: snapshot lookup, then evaluate."""
    from flags.evaluation import evaluate
    from flags.snapshot import current

    start = time.perf_counter()
    for key in keys:
        evaluate(current().flags[name], key)
    return (time.perf_counter() - start) / len(keys) * 1e6


def _time_is_on(name: str, keys: list[str]) -> float:
    from flags.selectors import is_on

    start = time.perf_counter()
    for key in keys:
        is_on(name, key)
    return (time.perf_counter() - start) / len(keys) * 1e6


def _stock_get(model: Any, name: str) -> Any:
    """waffle's own Flag.get (its cache, then the database); the control plane's model reads the snapshot."""
    from waffle.models import BaseModel

    return BaseModel.get.__func__(model, name)


def _time_waffle_stock(name: str, requests: list[Any]) -> float:
    """µs per call of waffle's own rule: its cache lookup (waffle's Flag.get) and AbstractBaseFlag.is_active."""
    from waffle import get_waffle_flag_model
    from waffle.models import AbstractBaseFlag

    model = get_waffle_flag_model()
    start = time.perf_counter()
    for request in requests:
        AbstractBaseFlag.is_active(_stock_get(model, name), request)
    return (time.perf_counter() - start) / len(requests) * 1e6


def _time_waffle_entry(name: str, requests: list[Any]) -> float:
    """µs per call of waffle.flag_is_active as the control plane wires it (our Flag.is_active)."""
    import waffle

    start = time.perf_counter()
    for request in requests:
        waffle.flag_is_active(request, name)
    return (time.perf_counter() - start) / len(requests) * 1e6


def _requests(count: int) -> list[Any]:
    """Fresh requests, one per call (waffle memoises a flag's answer on the request), each for its own user."""
    from django.contrib.auth import get_user_model
    from django.http import HttpRequest

    user_model = get_user_model()
    requests = []
    for index in range(count):
        request = HttpRequest()
        request.method = "GET"
        request.user = user_model(pk=1_000_000 + index, username=f"bench-{index}")
        requests.append(request)
    return requests


def child(ours_iterations: int, waffle_iterations: int) -> None:
    """Set up a scratch database, time both paths, print one JSON line."""
    import io

    import django

    django.setup()
    from decimal import Decimal

    from django.conf import settings
    from django.core.management import call_command
    from waffle import get_waffle_flag_model
    from waffle.models import AbstractBaseFlag

    from flags.evaluation import evaluate
    from flags.models import Flag
    from flags.snapshot import current

    call_command("migrate", verbosity=0)
    call_command("import_flags", str(FIXTURE), stdout=io.StringIO())
    # waffle's own fields on the same row: 50 %, nobody forced on or off. update() skips waffle's flush,
    # so flush by hand (a Redis database keeps what an earlier run cached).
    Flag.objects.filter(name=PEER_FLAG).update(percent=Decimal("50"), everyone=None)
    Flag.objects.get(name=PEER_FLAG).flush()
    flag = current().flags[PEER_FLAG]
    assert flag.enabled and flag.rollout_percent == 50 and not flag.targeting_keys, flag

    keys = [f"user-{random.getrandbits(64):016x}" for _ in range(ours_iterations)]
    model = get_waffle_flag_model()
    # Warm both paths, and check they answer the same share of users (so the percent rule really runs).
    share_ours = sum(evaluate(current().flags[PEER_FLAG], key)[0] for key in keys[:20_000]) / 20_000
    warm = _requests(2_000)
    share_waffle = sum(bool(AbstractBaseFlag.is_active(_stock_get(model, PEER_FLAG), r)) for r in warm) / len(warm)
    for share in (share_ours, share_waffle):
        assert 0.4 < share < 0.6, f"expected about half of the users on, got {share:.2f}"

    ours, is_on, stock, entry = [], [], [], []
    for _ in range(REPEATS):
        random.shuffle(keys)
        ours.append(_time_ours(PEER_FLAG, keys))
        is_on.append(_time_is_on(PEER_FLAG, keys))
        stock.append(_time_waffle_stock(PEER_FLAG, _requests(waffle_iterations)))
        entry.append(_time_waffle_entry(PEER_FLAG, _requests(waffle_iterations)))
    backend = settings.CACHES["default"]["BACKEND"].rsplit(".", 1)[-1]
    result = {
        "backend": backend,
        "ours_us": statistics.median(ours),
        "is_on_us": statistics.median(is_on),
        "waffle_us": statistics.median(stock),
        "waffle_entry_us": statistics.median(entry),
        "share_ours": share_ours,
        "share_waffle": share_waffle,
    }
    print(json.dumps(result))


def in_process(var_dir: str, cache_label: str, redis_url: str, ours_iterations: int, waffle_iterations: int) -> None:
    env = bench_env(
        DJANGO_SETTINGS_MODULE=SETTINGS,
        CONTROLPLANE_VAR_DIR=var_dir,
        DATABASE_URL="",  # a scratch SQLite under var_dir, whatever the environment says
        REDIS_URL=redis_url,
        LOG_LEVEL="WARNING",
    )
    command = [sys.executable, os.path.abspath(__file__), "--child"]
    command += ["--ours-iterations", str(ours_iterations), "--waffle-iterations", str(waffle_iterations)]
    completed = subprocess.run(command, cwd=BASE_DIR, env=env, capture_output=True, text=True)
    if completed.returncode != 0:
        sys.exit(f"bench: the in-process measurement failed ({cache_label}):\n{completed.stderr}{completed.stdout}")
    r = json.loads(completed.stdout.strip().splitlines()[-1])
    ratio = r["waffle_us"] / r["ours_us"]
    print(
        f"  {cache_label}: ours {r['ours_us']:.2f} us, is_on {r['is_on_us']:.2f} us, "
        f"waffle stock {r['waffle_us']:.1f} us, waffle.flag_is_active via our Flag.is_active "
        f"{r['waffle_entry_us']:.1f} us ({r['backend']}; on for {r['share_ours']:.0%} / {r['share_waffle']:.0%})"
    )
    print(
        f"flag evaluation in process: {r['ours_us']:.2f} us/call vs waffle flag_is_active {r['waffle_us']:.1f} us/call "
        f"({cache_label}): {ratio:.0f}x faster (goal >= {IN_PROCESS_GOAL:.0f}x)"
    )


# --- 2. OFREP through gunicorn -----------------------------------------------------------------------


def manage(*args: str) -> str:
    completed = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=BASE_DIR,
        env=bench_env(DJANGO_SETTINGS_MODULE=SETTINGS, LOG_LEVEL="WARNING"),
        capture_output=True,
        text=True,
    )
    if completed.returncode != 0:
        sys.exit(f"bench: manage.py {args[0]} failed:\n{completed.stderr}{completed.stdout}")
    return completed.stdout


# Production states for --targeted: 3 constraints and 2 variants on a rollout, the example.
TARGETED_STATE = {
    "enabled": True,
    "strategies": [
        {
            "kind": "flexibleRollout",
            "rollout": 80,
            "segments": ["premium-eu"],
            "constraints": [
                {"field": "appVersion", "operator": "SEMVER_GTE", "values": ["2.3.0"]},
                {"field": "city", "operator": "IN", "values": ["berlin", "paris"], "case_insensitive": True},
            ],
            "variants": [{"name": "a", "weight": 500}, {"name": "b", "weight": 500}],
        },
        {"kind": "userWithId", "user_ids": ["vip"]},
    ],
    "variants": [],
}
TARGETED_CONTEXT = {"plan": "premium", "country": "DE", "appVersion": "2.4.0", "city": "Berlin"}


def prepare_flags(targeted: bool = False) -> tuple[list[str], str]:
    """Exactly the fixture's flags in the benchmark database, and a new flags:read token."""
    names = [flag["name"] for flag in json.loads(FIXTURE.read_text())["flags"]]
    migrate(SETTINGS)
    manage("import_flags", str(FIXTURE))
    remove_others = (
        "from controlplane.audit import Actor\n"
        "from flags.models import Flag\n"
        "from flags.services import flag_delete\n"
        f"for name in Flag.objects.exclude(name__in={names!r}).values_list('name', flat=True):\n"
        "    flag_delete(name=name, actor=Actor.system('bench/flags.py'))\n"
    )
    manage("shell", "--no-imports", "-c", remove_others)
    if targeted:
        segment = {"name": "premium-eu", "constraints": [{"field": "plan", "operator": "IN", "values": ["premium"]}]}
        document = {
            "segments": [segment],
            "flags": [{"name": name, "environments": {"production": TARGETED_STATE}} for name in names[:4]],
        }
        manage(
            "shell",
            "--no-imports",
            "-c",
            "from controlplane.audit import Actor\n"
            "from flags.services import flags_import\n"
            f"flags_import(document={document!r}, actor=Actor.system('bench/flags.py'))\n",
        )
    token = manage("create_api_token", "bench", "--scopes", "flags:read").strip().splitlines()[-1]
    return names, token


def revoke(token: str) -> None:
    manage(
        "shell",
        "--no-imports",
        "-c",
        "from controlplane.audit import Actor\n"
        "from controlplane.models import ApiToken\n"
        "from controlplane.services import api_token_revoke\n"
        f"token = ApiToken.objects.get(token_hash=ApiToken.hash({token!r}))\n"
        "api_token_revoke(token=token, actor=Actor.system('bench/flags.py'))\n",
    )


def check_ofrep(url: str, body: bytes, token: str, names: list[str]) -> None:
    request = urllib.request.Request(  # noqa: S310 - loopback
        url,
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback
        status, answer = response.status, json.loads(response.read())
    got = sorted(flag["key"] for flag in answer.get("flags", []))
    if status != 200 or got != sorted(names) or any("errorCode" in flag for flag in answer["flags"]):
        sys.exit(f"bench: OFREP answered {status} with {answer}; expected the {len(names)} fixture flags")


def wrk_script(body: bytes, token: str) -> str:
    """A wrk Lua script that POSTs ``body`` as JSON with the token; the caller deletes the file."""
    lua = (
        'wrk.method = "POST"\n'
        f"wrk.body = {json.dumps(body.decode())}\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
        f'wrk.headers["Authorization"] = "Bearer {token}"\n'
    )
    with tempfile.NamedTemporaryFile("w", prefix="bench-ofrep-", suffix=".lua", delete=False) as script:
        script.write(lua)
    return script.name


def ofrep(rounds: int, seconds: int, targeted: bool = False) -> None:
    names, token = prepare_flags(targeted)
    context = {"targetingKey": TARGETING_KEY, **(TARGETED_CONTEXT if targeted else {})}
    body = json.dumps({"context": context}).encode()
    script = wrk_script(body, token)
    trivial: list[Load] = []
    bulk: list[Load] = []
    try:
        for _ in range(rounds):
            with gunicorn(SETTINGS, env={"LOG_FORMAT": "json"}) as url:
                ofrep_url = url + "/ofrep/v1/evaluate/flags"
                check_ofrep(ofrep_url, body, token, names)
                wrk(url + "/bench/trivial", seconds=2)  # warm up
                wrk(ofrep_url, seconds=2, script=script)
                for label, results, target, lua in (
                    ("trivial", trivial, url + "/bench/trivial", None),
                    ("ofrep", bulk, ofrep_url, script),
                ):
                    results.append(wrk(target, seconds=seconds, script=lua))
                    load = results[-1]
                    print(
                        f"  {label:8} p50 {load.p50_ms:.2f} ms  p99 {load.p99_ms:.2f} ms  "
                        f"{load.requests_per_second:,.0f} req/s"
                    )
    finally:
        os.unlink(script)
        revoke(token)
    a, b = median_load(bulk), median_load(trivial)
    ratio = a.requests_per_second / b.requests_per_second
    cache = "Redis cache" if os.environ.get("REDIS_URL") else "file cache"
    print(
        f"OFREP bulk evaluation, {len(names)} flags for one user"
        f"{' (4 with strategies, constraints and variants)' if targeted else ''} (gunicorn, 2 sync workers, {cache}): "
        f"p50 {a.p50_ms:.2f} ms, p99 {a.p99_ms:.2f} ms, {a.requests_per_second:,.0f} req/s vs trivial view "
        f"p50 {b.p50_ms:.2f} ms, {b.requests_per_second:,.0f} req/s: "
        f"{ratio:.2f} of its throughput (goal >= {OFREP_GOAL})"
    )


def _post(url: str, token: str, body: bytes) -> dict[str, Any]:
    request = urllib.request.Request(  # noqa: S310 - loopback
        url, data=body, method="POST", headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback
        return json.loads(response.read())


def propagation(trials: int) -> None:
    """Seconds from a toggle's answer until every answer, from any of the 2 workers, is the new value."""
    names, reader = prepare_flags()
    writer = manage("create_api_token", "bench-writer", "--scopes", "flags:write").strip().splitlines()[-1]
    flag = "ai_coach_chat"  # 100 % rollout: toggling flips every answer
    body = json.dumps({"context": {"targetingKey": TARGETING_KEY}}).encode()
    times: list[float] = []
    try:
        with gunicorn(SETTINGS, env={"LOG_FORMAT": "json"}) as url:
            evaluate_url = f"{url}/ofrep/v1/evaluate/flags/{flag}"
            for _ in range(trials):
                before = _post(evaluate_url, reader, body)["value"]
                for _ in range(20):  # both workers hold the current value
                    _post(evaluate_url, reader, body)
                _post(f"{url}/api/deployment/features/{flag}/toggle", writer, b"")
                changed_at = time.perf_counter()
                streak, first_new = 0, None
                give_up = changed_at + 10
                while streak < 20:
                    if time.perf_counter() > give_up:
                        sys.exit(f"bench: {flag} did not change on every worker within 10 s")
                    if _post(evaluate_url, reader, body)["value"] != before:
                        first_new = first_new if streak else time.perf_counter()
                        streak += 1
                    else:
                        streak, first_new = 0, None
                times.append(first_new - changed_at)
                time.sleep(0.6)
    finally:
        revoke(reader)
        revoke(writer)
    print(
        f"flag change reaching every gunicorn worker ({trials} toggles): median {statistics.median(times):.3f} s, "
        f"max {max(times):.3f} s (limit 1 s; the reload interval is 0.5 s)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="OFREP/trivial rounds through gunicorn")
    parser.add_argument("--seconds", type=int, default=10, help="seconds of wrk load per round")
    parser.add_argument("--ours-iterations", type=int, default=200_000)
    parser.add_argument("--waffle-iterations", type=int, default=20_000)
    parser.add_argument("--toggles", type=int, default=5, help="flag changes timed for propagation")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--targeted", action="store_true", help="OFREP only, 4 flags with strategies and variants")
    args = parser.parse_args()
    if args.targeted:
        ofrep(args.rounds, args.seconds, targeted=True)
        return
    if args.child:
        child(args.ours_iterations, args.waffle_iterations)
        return

    var_dir = tempfile.mkdtemp(prefix="bench-flags-")
    try:
        in_process(var_dir, "file cache", "", args.ours_iterations, args.waffle_iterations)
        reason = redis_problem()
        if reason is None:
            in_process(var_dir, "Redis cache", REDIS_URL, args.ours_iterations, args.waffle_iterations)
        else:
            print(f"flag evaluation in process (Redis cache): skipped, {reason}")
    finally:
        shutil.rmtree(var_dir, ignore_errors=True)
    ofrep(args.rounds, args.seconds)
    propagation(args.toggles)


if __name__ == "__main__":
    main()
