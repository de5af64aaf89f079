"""Cost of the backup gate's decision (``deployments.backup_gate.decide``), as a ratio against its 50 ms limit.

The control plane runs in this process on PostgreSQL ``bench_backup_gate_cp`` on 127.0.0.1:5432 (user
postgres; created and migrated here, kept between runs), CONTROLPLANE_VAR_DIR under the temp directory.
Two backup targets, each with a long history of backup rows (``--history``, default 20,000: years of
hourly backups, far more than retention keeps) so that the decision's queries meet a big table:

- ``gate-pass``: its newest backup is a real one, taken with ``backups.services.backup_create`` of a
  small database made here (``bench_backup_gate_src``) and verified with ``backup_verify``: the gate passes.
- ``gate-stale``: its newest verified backup is 30 h old (RPO 26 h) and a newer one is unverified: the gate
  refuses, and looks for that newer backup to name it (one query more).

The tables are ANALYZEd after the rows are written (a planner without statistics for a freshly filled
table sorts all of a target's rows: about 20 ms here). Each decision is timed ``--rounds`` times
(default 200) after 20 warm-up calls; p50 and p95 are printed, each as a ratio against the 50 ms limit
(goal: p95 ratio <= 1). Exit status 0 even when the goal is missed ("MISSED" is printed); 1 when the
real backup or its verification fails; 2 when PostgreSQL is missing.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench._harness import BASE_DIR  # noqa: E402,F401  (also: SIGTERM still runs the finally blocks)

HOST, PORT, USER = "127.0.0.1", 5432, "postgres"
CONTROL_DB = "bench_backup_gate_cp"
SOURCE_DB = "bench_backup_gate_src"
CONTROL_URL = f"postgres://{USER}@{HOST}:{PORT}/{CONTROL_DB}"
SOURCE_URL = f"postgres://{USER}@{HOST}:{PORT}/{SOURCE_DB}"
URL_ENV = "BENCH_GATE_SOURCE_URL"
VAR_DIR = Path(tempfile.gettempdir()) / "controlplane-bench-backup-gate"
LIMIT_MS = 50.0
PASS, STALE = "gate-pass", "gate-stale"


def fail(message: str, status: int = 2) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)
    sys.exit(status)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(fraction * len(ordered))) - 1]


def ensure_databases() -> None:
    import psycopg
    from psycopg import sql

    try:
        conn = psycopg.connect(host=HOST, port=PORT, user=USER, dbname="postgres", autocommit=True, connect_timeout=10)
    except psycopg.OperationalError as exc:
        fail(f"PostgreSQL at {HOST}:{PORT} (user {USER}, trust auth) does not answer: {str(exc).strip()}")
    with conn:
        for name in (CONTROL_DB, SOURCE_DB):
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone() is None:
                conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name)))
    with psycopg.connect(SOURCE_URL, autocommit=True) as source:
        source.execute(
            "CREATE TABLE IF NOT EXISTS members (id serial PRIMARY KEY, email text NOT NULL UNIQUE);"
            "INSERT INTO members (email) SELECT 'm' || g || '@example.test' FROM generate_series(1, 1000) g "
            "ON CONFLICT DO NOTHING"
        )


def setup(history: int) -> dict[str, Any]:
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "controlplane.settings",
            "DJANGO_ENV": "development",
            "CONTROLPLANE_VAR_DIR": str(VAR_DIR),
            "DATABASE_URL": CONTROL_URL,
            URL_ENV: SOURCE_URL,
            "SENTRY_DSN": "",
        }
    )
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    import django

    django.setup()
    from django.core.management import call_command
    from django.utils import timezone

    from backups.models import Backup, BackupStatus, BackupTarget, VerificationResult
    from backups.services import backup_create, backup_verify
    from controlplane.audit import Actor

    call_command("migrate", verbosity=0)
    actor = Actor.system("bench/backup_gate.py")
    now = timezone.now()
    targets = {}
    for name in (PASS, STALE):
        target, _ = BackupTarget.objects.get_or_create(
            name=name, defaults={"url_env": URL_ENV, "rpo_hours": 26, "retention_days": 0, "enabled": False}
        )
        targets[name] = target
        # The history: rows only (no files), older than a day, verified ones among them.
        if target.backups.count() < history:
            target.backups.all().delete()
            Backup.objects.bulk_create(
                Backup(
                    target=target,
                    status=BackupStatus.SUCCEEDED,
                    engine="postgresql",
                    started_at=now - timedelta(hours=31 + i),
                    finished_at=now - timedelta(hours=31 + i),
                    size_bytes=1000,
                    sha256="0" * 64,
                    verification=VerificationResult.PASSED if i % 24 == 0 else VerificationResult.NONE,
                )
                for i in range(history)
            )
    # gate-pass: a real backup, verified, newest (each run adds one).
    backup = backup_create(target=targets[PASS], actor=actor)
    if backup.status != BackupStatus.SUCCEEDED:
        fail(f"backup #{backup.pk} failed: {backup.error}", 1)
    verification = backup_verify(backup=backup, actor=actor)
    if verification.status != VerificationResult.PASSED:
        fail(f"verification #{verification.pk} failed at {verification.failed_check}: {verification.error}", 1)
    # gate-stale: the newest verified one 30 h old, a newer one unverified.
    stale = targets[STALE]
    Backup.objects.filter(target=stale, started_at__gt=now - timedelta(hours=30)).delete()
    Backup.objects.create(
        target=stale, status=BackupStatus.SUCCEEDED, engine="postgresql", started_at=now - timedelta(hours=30),
        size_bytes=1000, sha256="0" * 64, verification=VerificationResult.PASSED,
    )  # fmt: skip
    Backup.objects.create(
        target=stale, status=BackupStatus.SUCCEEDED, engine="postgresql", started_at=now - timedelta(hours=2),
        size_bytes=1000, sha256="0" * 64,
    )  # fmt: skip
    from django.db import connection

    with connection.cursor() as cursor:  # statistics for the rows just written, as autovacuum would gather
        cursor.execute("ANALYZE backups_backup")
        cursor.execute("ANALYZE backups_verification")
    return {"backup": backup.pk, "verification": verification.pk}


def time_decision(name: str, rounds: int) -> tuple[list[float], Any]:
    from deployments.backup_gate import decide

    decision = None
    for _ in range(20):
        decision = decide(name)
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        decision = decide(name)
        times.append((time.perf_counter() - start) * 1000)
    return times, decision


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--history", type=int, default=20_000)
    args = parser.parse_args()
    ensure_databases()
    real = setup(args.history)
    print(
        f"history: {args.history} backup rows per target; gate-pass's newest is real backup #{real['backup']} "
        f"(verification #{real['verification']})"
    )
    missed = False
    for name, expect in ((PASS, True), (STALE, False)):
        times, decision = time_decision(name, args.rounds)
        if decision.passed is not expect:
            fail(f"{name}: the gate {'passed' if decision.passed else 'refused'}: {decision.reason}", 1)
        p50, p95 = statistics.median(times), percentile(times, 0.95)
        verdict = "ok" if p95 <= LIMIT_MS else "MISSED"
        missed = missed or verdict == "MISSED"
        outcome = "passes" if decision.passed else "refuses"
        print(
            f"decision, {name} ({outcome}): p50 {p50:.2f} ms = {p50 / LIMIT_MS:.3f} x the {LIMIT_MS:g} ms limit; "
            f"p95 {p95:.2f} ms = {p95 / LIMIT_MS:.3f} x the limit ({args.rounds} rounds) {verdict}"
        )
    if missed:
        print("goal: p95 <= 50 ms: MISSED")


if __name__ == "__main__":
    main()
