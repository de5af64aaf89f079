"""Cost of reading the changes a chart marks (``controlplane.changes.changes_between``) on a busy audit table,
against the audit table's own plainest read over the same window.

A PostgreSQL database on 127.0.0.1:5432 (user postgres, trust auth), named with a random suffix, created,
migrated and dropped here. PostgreSQL itself fills the audit table with ``--rows`` (1,000,000) events over
30 days ending now (generate_series): about 2 % are changes (deployment runs, flag changes), the rest what
an audit table mostly holds (logins, backups, rule edits, scheduled flag changes, deployment requests).
Then VACUUM ANALYZE.

Measured, each the median of ``--repeat`` (30) calls after 3 warm-up calls, in this process:

1. ``changes_between`` over the last hour (a service's sparkline) and the last 7 days (the dashboard's
   charts: one read serves the three), against the peer: the newest 200 audit events of the same window
   with no filter on the action (``AuditEvent.objects.filter(time range)[:200]``, served by the same index
   on ``time``). The ratio changes/peer is printed. Goal: the 7-day read under 50 ms.
2. EXPLAIN (ANALYZE, BUFFERS) of the 7-day read, to show which index serves it.

Exit status 0 even when the goal is missed ("MISSED" is printed); 2 when PostgreSQL is missing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench._harness import BASE_DIR, bench_env  # noqa: E402

HOST, PORT, USER = "127.0.0.1", 5432, "postgres"
GOAL_MS = 50.0

FILL = """
INSERT INTO controlplane_auditevent
    (time, actor_type, actor_label, action, object_type, object_id, object_label, before, after, request_id)
SELECT now() - (n * (interval '30 days' / %(rows)s)),
       'system', 'bench',
       CASE WHEN n %% 100 = 0 THEN 'deployment.started'
            WHEN n %% 100 = 1 THEN 'flag.toggle'
            WHEN n %% 100 < 40 THEN 'auth.login'
            WHEN n %% 100 < 60 THEN 'backup.verify'
            WHEN n %% 100 < 70 THEN 'flag.schedule'
            WHEN n %% 100 < 80 THEN 'deployment.deploy'
            ELSE 'alertrule.update' END,
       'bench.object', (n %% 1000)::text, 'object ' || (n %% 1000)::text,
       CASE WHEN n %% 100 = 1 THEN '{"enabled": false}'::jsonb ELSE NULL END,
       CASE WHEN n %% 100 = 0 THEN '{"environment": "production", "version": "v1", "dry_run": false}'::jsonb
            WHEN n %% 100 = 1 THEN '{"enabled": true}'::jsonb
            ELSE NULL END,
       ''
FROM generate_series(1, %(rows)s) AS n
"""


def median_ms(call: Callable[[], Any], repeat: int) -> float:
    for _ in range(3):
        call()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()

    import psycopg

    name = f"bench_changes_{uuid.uuid4().hex[:8]}"
    try:
        admin = psycopg.connect(host=HOST, port=PORT, user=USER, dbname="postgres", autocommit=True)
    except psycopg.OperationalError as exc:
        print(f"bench: PostgreSQL is missing at {HOST}:{PORT}: {exc}")  # noqa: T201
        return 2
    admin.execute(f'CREATE DATABASE "{name}"')
    url = f"postgres://{USER}@{HOST}:{PORT}/{name}"
    try:
        env = bench_env(DATABASE_URL=url)
        subprocess.run(
            [sys.executable, str(BASE_DIR / "manage.py"), "migrate", "--verbosity", "0"], env=env, check=True
        )
        os.environ.update(env)
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings")
        import django

        django.setup()
        return measure(args)
    finally:
        from django.db import connections

        connections.close_all()
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def measure(args: argparse.Namespace) -> int:
    from django.db import connection
    from django.utils import timezone

    from controlplane.changes import changes_between
    from controlplane.models import AuditEvent

    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute(FILL, {"rows": args.rows})
        cursor.execute("VACUUM ANALYZE controlplane_auditevent")
    print(f"filled {args.rows:,} audit events over 30 days in {time.perf_counter() - started:.1f} s")  # noqa: T201

    now = timezone.now()
    for label, span in (("last hour", timedelta(hours=1)), ("last 7 days", timedelta(days=7))):
        since = now - span
        found = len(changes_between(since, now))
        ours = median_ms(lambda since=since: changes_between(since, now), args.repeat)
        peer = median_ms(
            lambda since=since: list(AuditEvent.objects.filter(time__gte=since, time__lt=now)[:200]), args.repeat
        )
        print(  # noqa: T201
            f"changes over the {label}: {ours:.2f} ms ({found} changes) vs the newest 200 audit events of the "
            f"window {peer:.2f} ms: ratio {ours / peer:.2f}"
        )
        if span == timedelta(days=7):
            verdict = "met" if ours <= GOAL_MS else "MISSED"
            print(f"goal: the 7-day read under {GOAL_MS:g} ms: {verdict}")  # noqa: T201

    from controlplane.changes import _query

    where = _query(now - timedelta(days=7), now)
    assert where is not None
    sql, params = (
        AuditEvent.objects.filter(where)
        .order_by("-time", "-id")
        .values_list("time", "action")[:200]
        .query.sql_with_params()
    )
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql, params)
        print("EXPLAIN of the 7-day read:")  # noqa: T201
        for (line,) in cursor.fetchall():
            print(f"  {line}")  # noqa: T201
    return 0  # a missed goal is printed, not an error (as the other benchmarks)


if __name__ == "__main__":
    sys.exit(main())
