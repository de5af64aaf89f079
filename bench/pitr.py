"""Point-in-time recovery through pgBackRest: verification cost and the recovery point actually achieved.

A PostgreSQL cluster of this script's own (initdb in a temporary directory, on a free port; archive_mode on,
archive_command through pgBackRest, ``archive_timeout`` 60 s; tests/backups/pitr_cluster.py) gets a
pgbench database (``--scale``, default 10: about 160 MiB) and a full pgBackRest backup.

1. Achieved RPO: for ``--rpo-seconds`` (default 180) a light write load (one pgbench-style update a
   second) runs while the age of the newest archived WAL segment (``pgbackrest repo-ls`` time, as the
   control plane reads it) is sampled every 5 s. Figure: the largest age sampled. Goal: <= 70 s with
   archive_timeout 60 s.

2. Point-in-time verification: what backups.pitr.verify runs (the window read, then ``PitrVerifier``: a
   commit written and archived beside the restore, restore --type=time to a time inside the window into a
   scratch directory, start on a free port, wait for promotion, recovered-to-time, then the row, schema and
   amcheck checks together, and the server stopped; its directory is removed after the verdict, uncounted)
   against the peer: a bare ``pgbackrest restore --type=time --target=<same time> --target-action=promote``
   plus ``pg_ctl start -w`` and waiting for promotion (its stop and removal are not counted). Rounds
   alternate peer and ours, each after a sync (``--rounds``, default 5 each); medians are compared. Goal: ratio <= 1.3.

Everything made here (cluster, repository, scratch directories) is removed at the end. Exit status 0
even when a goal is missed ("MISSED" is printed); 1 when a verification fails; 2 when pgbackrest or the
PostgreSQL server binaries are missing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench._harness import BASE_DIR  # noqa: E402  (also: SIGTERM still runs the finally blocks)

VAR_DIR = Path(tempfile.gettempdir()) / "controlplane-bench-pitr"
RPO_LIMIT_SECONDS = 70
RATIO_LIMIT = 1.3


def configure_environment() -> None:
    os.environ["DJANGO_SETTINGS_MODULE"] = "controlplane.settings"
    os.environ["CONTROLPLANE_VAR_DIR"] = str(VAR_DIR)
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    for name in ("DATABASE_URL", "PG_BIN_DIR", "BACKUP_SCRATCH_DATABASE_URL"):
        os.environ.pop(name, None)
    sys.path.insert(0, str(BASE_DIR))
    import django

    django.setup()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", type=int, default=10, help="pgbench scale of the database (default 10)")
    parser.add_argument("--rpo-seconds", type=int, default=180, help="how long to sample the RPO (default 180)")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds of each side (default 5)")
    args = parser.parse_args()

    from tests.backups.pitr_cluster import Cluster, pgbackrest_missing

    if pgbackrest_missing():
        print(f"bench: {pgbackrest_missing()}")
        return 2
    configure_environment()
    root = Path(tempfile.mkdtemp(prefix="pitr-bench-"))
    try:
        cluster = Cluster(root, stanza="bench", archive_timeout=60)
    except RuntimeError as exc:
        print(f"bench: {exc}")
        return 2
    try:
        cluster.start()
        cluster.run(
            str(cluster.bin / "pgbench"),
            "-i",
            "-q",
            "-s",
            str(args.scale),
            "-h",
            str(root),
            "-p",
            str(cluster.port),
            "-U",
            cluster.user,
            "postgres",
            timeout=600,
        )
        print(f"cluster on port {cluster.port}: pgbench scale {args.scale}, {database_mib(cluster):.0f} MiB")
        started = time.perf_counter()
        cluster.pgbackrest("--type=full", "backup", timeout=900)
        print(f"full backup: {time.perf_counter() - started:.1f} s")
        worst = measure_rpo(cluster, args.rpo_seconds)
        verdict = "ok" if worst <= RPO_LIMIT_SECONDS else "MISSED"
        print(
            f"1. achieved RPO (archive_timeout 60 s): worst {worst:.0f} s over {args.rpo_seconds} s "
            f"of light writes; goal <= {RPO_LIMIT_SECONDS} s: {verdict}"
        )
        failed = measure_verification(cluster, args.rounds)
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
    return 1 if failed else 0


def database_mib(cluster) -> float:  # type: ignore[no-untyped-def]
    import psycopg

    with psycopg.connect(cluster.url(), autocommit=True) as conn:
        row = conn.execute("SELECT pg_database_size('postgres')").fetchone()
    return float(row[0]) / 2**20 if row else 0.0


def repository(cluster):  # type: ignore[no-untyped-def]
    from backups import engines

    return engines.Repository(stanza=cluster.stanza, config=str(cluster.config), os_user=cluster.os_user)


def measure_rpo(cluster, seconds: int) -> float:  # type: ignore[no-untyped-def]
    """The largest age of the newest archived WAL seen every 5 s while one update a second commits."""
    import psycopg

    from backups.engines import pgbackrest

    stop = threading.Event()

    def load() -> None:
        with psycopg.connect(cluster.url(), autocommit=True) as conn:
            while not stop.wait(1.0):
                conn.execute(
                    "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = 1 + (random() * 999)::int"
                )

    writer = threading.Thread(target=load, daemon=True)
    writer.start()
    repo = repository(cluster)
    ages = []
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            info = pgbackrest.info(repo, timeout=60)
            newest = pgbackrest.latest_wal_at(repo, info, timeout=60)
            if newest is not None:
                ages.append((datetime.now(UTC) - newest).total_seconds())
            time.sleep(5)
    finally:
        stop.set()
        writer.join(timeout=10)
    print(f"   {len(ages)} samples: median {statistics.median(ages):.0f} s, max {max(ages):.0f} s")
    return max(ages)


def measure_verification(cluster, rounds: int) -> bool:  # type: ignore[no-untyped-def]
    from backups import engines
    from backups.engines import pgbackrest

    repo = repository(cluster)
    source = engines.from_url(cluster.url(), variable="bench")
    floor = datetime.now(UTC)
    pgbackrest.archive_now(repo, source, timeout=120)
    window = pgbackrest.window(repo, timeout=60)
    assert window.start is not None and window.end is not None
    when = pgbackrest.pick_time(window.start, min(window.end, floor - timedelta(seconds=1)))
    print(f"2. restore target {when:%H:%M:%S} UTC inside {window.start:%H:%M:%S} .. {window.end:%H:%M:%S}")
    peer_times, our_times, failed = [], [], False
    scratches: list[str] = []
    for _ in range(rounds):
        settle()
        peer_times.append(peer_restore(cluster, when))
        settle()
        started = time.perf_counter()
        pgbackrest.window(repo, timeout=60)  # as backups.pitr.verify does: the window, then the verifier
        outcome = engines.PitrVerifier(
            repo=repo,
            source=source,
            target_time=when,
            timeout=600,
            alongside=lambda: pgbackrest.archive_now(repo, source, timeout=120),
            on_scratch=scratches.append,
            leave_directory=True,  # as backups.pitr.verify: removed after the verdict is recorded
        ).run()
        our_times.append(time.perf_counter() - started)
        engines.remove_scratch(scratches[-1])  # not counted, as the peer's removal is not
        if outcome.failed:
            print(f"   verification FAILED at {outcome.failed.name}: {outcome.failed.detail}")
            failed = True
        print(
            f"   peer {peer_times[-1]:.1f} s, ours {our_times[-1]:.1f} s "
            f"({', '.join(f'{c.name} {c.ms} ms' for c in outcome.checks)})"
        )
    ratio = statistics.median(our_times) / statistics.median(peer_times)
    verdict = "ok" if ratio <= RATIO_LIMIT else "MISSED"
    print(
        f"   point-in-time verification {statistics.median(our_times):.1f} s vs bare restore + start-up "
        f"{statistics.median(peer_times):.1f} s: ratio {ratio:.2f}; goal <= {RATIO_LIMIT}: {verdict}"
    )
    return failed


def settle() -> None:
    """Write back what the previous run left dirty, so that neither side pays for the other's pages."""
    os.sync()
    time.sleep(1)


def peer_restore(cluster, when: datetime) -> float:  # type: ignore[no-untyped-def]
    """Bare pgbackrest restore to ``when`` + pg_ctl start + promotion; seconds (stop and removal not counted)."""
    from backups import engines
    from backups.engines import pgbackrest

    scratch = Path(tempfile.mkdtemp(prefix="verify_pitr_peer_"))
    cluster._own(scratch)
    data, port = scratch / "data", pgbackrest.free_port()
    try:
        started = time.perf_counter()
        cluster.pgbackrest(
            f"--pg1-path={data}",
            "--type=time",
            f"--target={when:%Y-%m-%d %H:%M:%S+00}",
            "--target-action=promote",
            "--archive-mode=off",
            "restore",
            timeout=600,
        )
        options = f"-c port={port} -c listen_addresses='' -c unix_socket_directories='{scratch}' -c archive_mode=off"
        cluster.run(
            str(cluster.bin / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(scratch / "log"),
            "-w",
            "-o",
            options,
            "start",
            timeout=600,
        )
        db = engines.Database("postgresql", "postgres", str(scratch), port, cluster.user)
        pgbackrest._wait_promoted(db, deadline=time.monotonic() + 600)
        return time.perf_counter() - started
    finally:
        engines.remove_scratch(str(scratch))


if __name__ == "__main__":
    sys.exit(main())
