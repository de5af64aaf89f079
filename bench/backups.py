"""Cost of taking and verifying a PostgreSQL backup, each figure as a ratio against a peer measured in the same run.

The source is ``bench_backups_src`` on 127.0.0.1:5432 (user postgres): a generated dating-coaching
database (coaches, users, coaching_sessions, messages: text, timestamps, B-tree indexes, foreign keys)
of at least 200 MiB by ``pg_database_size``, made in the server with ``generate_series`` and
VACUUM ANALYZEd. It is kept between runs while it holds this script's data version and is big
enough (``--regenerate`` rebuilds it). The control plane runs in this process against its own
database ``bench_backups_cp`` (migrated here), with CONTROLPLANE_VAR_DIR under the temp directory.

1. Backup time: ``backups.services.backup_create`` of the source (pg_dump -Fc through the engine:
   snapshot, row counts alongside, hashing, fsync, store) against a bare ``pg_dump -Fc -f <file> <db>``
   (same pg_dump binary, same disk). Goal: ratio ours/peer <= 1.1.

2. Verification time: ``backups.services.backup_verify`` of the last backup taken in (1) (checksum,
   CREATE DATABASE, pg_restore into a scratch database, row counts, schema comparison, pg_amcheck,
   DROP) against CREATE DATABASE ... TEMPLATE template0 plus a bare
   ``pg_restore --no-owner --no-privileges --exit-on-error -d <empty db> <file>`` of the same file.
   The peer's DROP DATABASE is timed apart and not counted. Goal: ratio ours/peer <= 1.3.

Rounds alternate peer, ours (``--rounds``, default 3 each); a CHECKPOINT precedes every timed run so
that neither pays for the other's dirty pages. Medians are compared. The peer's dump files and scratch
database, and the backups taken here (files and rows), are removed at the end. Exit status 0 even when
a goal is missed ("MISSED" is printed); 1 when a backup or a verification fails; 2 when PostgreSQL or
its client tools are missing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench._harness import BASE_DIR  # noqa: E402  (also: SIGTERM still runs the finally blocks)

HOST, PORT, USER = "127.0.0.1", 5432, "postgres"
SOURCE_DB = "bench_backups_src"
CONTROL_DB = "bench_backups_cp"
PEER_SCRATCH_DB = "bench_backups_peer_restore"
SOURCE_URL = f"postgres://{USER}@{HOST}:{PORT}/{SOURCE_DB}"
CONTROL_URL = f"postgres://{USER}@{HOST}:{PORT}/{CONTROL_DB}"
VAR_DIR = Path(tempfile.gettempdir()) / "controlplane-bench-backups"
TARGET_NAME = "bench"
URL_ENV = "BENCH_SOURCE_URL"
MIN_BYTES = 200 * 1024 * 1024
BACKUP_GOAL = 1.1
VERIFY_GOAL = 1.3
DATA_VERSION = "bench/backups.py data v2"
MiB = 1024 * 1024

# Rows generated: about 265 MiB by pg_database_size, indexes included.
COACHES = 400
USERS = 120_000
SESSIONS = 180_000
MESSAGES = 600_000
PHRASES = 2_000

WORDS = """
hey hi hello thanks great awesome coffee dinner weekend tonight tomorrow maybe love like really fun
walk park museum concert hike beach movie book music travel trip city bar restaurant brunch wine
date first second match profile photo bio message reply conversation ghosted nervous confident
honest kind funny smart curious adventurous calm shy outgoing laugh smile story question answer
coach session goal progress feedback practice opener follow-up boundary respect listen share feel
anxious excited happy sad tired busy free available schedule call video chat meet plan idea
favourite food pizza sushi tacos pasta dog cat sister brother friend family job work study gym
yoga run climb cook bake paint photography guitar piano dance sing garden volunteer read write
""".split()
CITIES = """Berlin Hamburg Munich Cologne Vienna Zurich Amsterdam Paris Lyon Madrid Lisbon Milan Prague Warsaw
Copenhagen Stockholm Oslo Dublin London Brussels""".split()


def fail(message: str, status: int = 2) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)
    sys.exit(status)


# --- Environment, before Django --------------------------------------------------------------------


def configure_environment() -> None:
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    os.environ["DJANGO_SETTINGS_MODULE"] = "controlplane.settings"
    os.environ["CONTROLPLANE_VAR_DIR"] = str(VAR_DIR)
    os.environ["DATABASE_URL"] = CONTROL_URL
    os.environ[URL_ENV] = SOURCE_URL
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    # Backups and scratch databases where this benchmark says, whatever the calling environment says.
    for name in ("BACKUP_DIR", "BACKUP_TMP_DIR", "BACKUP_SCRATCH_DATABASE_URL"):
        os.environ.pop(name, None)


def admin_connection(dbname: str = "postgres") -> Any:
    import psycopg

    try:
        return psycopg.connect(host=HOST, port=PORT, user=USER, dbname=dbname, autocommit=True, connect_timeout=10)
    except psycopg.OperationalError as exc:
        fail(f"PostgreSQL at {HOST}:{PORT} (user {USER}, trust auth) does not answer: {str(exc).strip()}")
        raise  # unreachable


def database_exists(name: str) -> bool:
    with admin_connection() as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone() is not None


def database_size(name: str) -> int:
    with admin_connection() as conn:
        return conn.execute("SELECT pg_database_size(%s)", [name]).fetchone()[0]


def create_database(name: str) -> None:
    from psycopg import sql

    with admin_connection() as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name)))


def drop_database(name: str) -> None:
    from psycopg import sql

    with admin_connection() as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def checkpoint() -> None:
    with admin_connection() as conn:
        conn.execute("CHECKPOINT")


# --- The source database ---------------------------------------------------------------------------

SCHEMA = """
CREATE TABLE bench_meta (key text PRIMARY KEY, value text NOT NULL);
CREATE TABLE coaches (
    id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    name text NOT NULL,
    specialty text NOT NULL,
    hourly_rate_cents integer NOT NULL,
    created_at timestamptz NOT NULL
);
CREATE TABLE users (
    id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    email text NOT NULL,
    display_name text NOT NULL,
    gender text NOT NULL,
    seeking text NOT NULL,
    birth_date date NOT NULL,
    city text NOT NULL,
    bio text NOT NULL,
    subscription_tier text NOT NULL,
    created_at timestamptz NOT NULL,
    last_seen_at timestamptz
);
CREATE TABLE coaching_sessions (
    id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    user_id bigint NOT NULL,
    coach_id bigint NOT NULL,
    scheduled_at timestamptz NOT NULL,
    duration_minutes integer NOT NULL,
    status text NOT NULL,
    topic text NOT NULL,
    notes text NOT NULL,
    rating smallint
);
CREATE TABLE messages (
    id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    sender_id bigint NOT NULL,
    recipient_id bigint NOT NULL,
    sent_at timestamptz NOT NULL,
    body text NOT NULL,
    read_at timestamptz
);
"""

FILL = [
    # Sentences of 4 to 15 words from the word list: text that compresses like chat text does.
    """
    CREATE TEMP TABLE phrases AS
    SELECT g AS id,
           (SELECT string_agg(w.words[1 + floor(random() * cardinality(w.words))::int], ' ')
              FROM generate_series(1, 4 + g %% 12), (SELECT %(words)s::text[] AS words) w) AS phrase
      FROM generate_series(1, %(phrases)s) g
    """,
    "CREATE INDEX ON phrases (id)",
    """
    INSERT INTO coaches (id, name, specialty, hourly_rate_cents, created_at)
    SELECT g, 'Coach ' || initcap(p.phrase),
           (ARRAY['first dates', 'confidence', 'online profiles', 'breakups', 'long-term'])[1 + g %% 5],
           4000 + (g * 37) %% 8000, now() - (g || ' days')::interval
      FROM generate_series(1, %(coaches)s) g JOIN phrases p ON p.id = g
    """,
    """
    INSERT INTO users (id, email, display_name, gender, seeking, birth_date, city, bio, subscription_tier,
                       created_at, last_seen_at)
    SELECT r.g, 'user' || r.g || '.' || substr(md5(r.g::text), 1, 6) || '@example.com',
           initcap(split_part(a.phrase, ' ', 1)) || ' ' || upper(substr(md5(r.g::text), 7, 1)) || '.',
           (ARRAY['woman', 'man', 'non-binary'])[1 + r.g %% 3], (ARRAY['women', 'men', 'everyone'])[1 + (r.g / 3) %% 3],
           date '1965-01-01' + (random() * 14000)::int, (%(cities)s::text[])[1 + r.g %% 20],
           a.phrase || '. ' || b.phrase || '.', (ARRAY['free', 'free', 'free', 'plus', 'coaching'])[1 + r.g %% 5],
           r.created, CASE WHEN random() < 0.9 THEN r.created + random() * (now() - r.created) END
      FROM (SELECT g, 1 + floor(random() * %(phrases)s)::int AS pa, 1 + floor(random() * %(phrases)s)::int AS pb,
                   now() - random() * interval '1500 days' AS created
              FROM generate_series(1, %(users)s) g) r
      JOIN phrases a ON a.id = r.pa JOIN phrases b ON b.id = r.pb
    """,
    """
    INSERT INTO coaching_sessions (id, user_id, coach_id, scheduled_at, duration_minutes, status, topic, notes, rating)
    SELECT r.g, r.u, 1 + r.g %% %(coaches)s, r.at, (ARRAY[30, 45, 60, 90])[1 + r.g %% 4],
           CASE WHEN r.at > now() THEN 'scheduled' WHEN r.g %% 11 = 0 THEN 'cancelled' ELSE 'completed' END,
           initcap(t.phrase), a.phrase || '. ' || b.phrase || '. ' || c.phrase || '.',
           CASE WHEN r.at < now() AND r.g %% 3 > 0 THEN 1 + r.g %% 5 END
      FROM (SELECT g, 1 + floor(random() * %(users)s)::bigint AS u, now() - random() * interval '900 days'
                   + interval '30 days' AS at,
                   1 + floor(random() * %(phrases)s)::int AS pt, 1 + floor(random() * %(phrases)s)::int AS pa,
                   1 + floor(random() * %(phrases)s)::int AS pb, 1 + floor(random() * %(phrases)s)::int AS pc
              FROM generate_series(1, %(sessions)s) g) r
      JOIN phrases t ON t.id = r.pt JOIN phrases a ON a.id = r.pa
      JOIN phrases b ON b.id = r.pb JOIN phrases c ON c.id = r.pc
    """,
    """
    INSERT INTO messages (id, sender_id, recipient_id, sent_at, body, read_at)
    SELECT r.g, r.s, 1 + (r.s + r.g %% 997) %% %(users)s, r.at, a.phrase || CASE WHEN r.g %% 3 = 0 THEN '? ' || b.phrase
           ELSE '' END, CASE WHEN random() < 0.8 THEN r.at + random() * interval '2 days' END
      FROM (SELECT g, 1 + floor(random() * %(users)s)::bigint AS s, now() - random() * interval '700 days' AS at,
                   1 + floor(random() * %(phrases)s)::int AS pa, 1 + floor(random() * %(phrases)s)::int AS pb
              FROM generate_series(1, %(messages)s) g) r
      JOIN phrases a ON a.id = r.pa JOIN phrases b ON b.id = r.pb
    """,
]

INDEXES = """
SELECT setval(pg_get_serial_sequence('coaches', 'id'), (SELECT max(id) FROM coaches));
SELECT setval(pg_get_serial_sequence('users', 'id'), (SELECT max(id) FROM users));
SELECT setval(pg_get_serial_sequence('coaching_sessions', 'id'), (SELECT max(id) FROM coaching_sessions));
SELECT setval(pg_get_serial_sequence('messages', 'id'), (SELECT max(id) FROM messages));
CREATE UNIQUE INDEX users_email_key ON users (lower(email));
CREATE INDEX users_city_created ON users (city, created_at);
CREATE INDEX users_last_seen ON users (last_seen_at);
CREATE INDEX coaching_sessions_user ON coaching_sessions (user_id, scheduled_at);
CREATE INDEX coaching_sessions_coach ON coaching_sessions (coach_id, scheduled_at);
CREATE INDEX messages_recipient_sent ON messages (recipient_id, sent_at);
CREATE INDEX messages_sender_sent ON messages (sender_id, sent_at);
ALTER TABLE coaching_sessions ADD CONSTRAINT coaching_sessions_user_fk FOREIGN KEY (user_id) REFERENCES users (id);
ALTER TABLE coaching_sessions ADD CONSTRAINT coaching_sessions_coach_fk FOREIGN KEY (coach_id) REFERENCES coaches (id);
ALTER TABLE messages ADD CONSTRAINT messages_sender_fk FOREIGN KEY (sender_id) REFERENCES users (id);
ALTER TABLE messages ADD CONSTRAINT messages_recipient_fk FOREIGN KEY (recipient_id) REFERENCES users (id);
ALTER TABLE coaching_sessions ADD CONSTRAINT coaching_sessions_rating CHECK (rating BETWEEN 1 AND 5);
"""


def source_is_ready() -> bool:
    if not database_exists(SOURCE_DB) or database_size(SOURCE_DB) < MIN_BYTES:
        return False
    with admin_connection(SOURCE_DB) as conn:
        if conn.execute("SELECT to_regclass('public.bench_meta')").fetchone()[0] is None:
            return False
        row = conn.execute("SELECT value FROM bench_meta WHERE key = 'version'").fetchone()
        return row is not None and row[0] == DATA_VERSION


def generate_source() -> float:
    """Drop and recreate the source database with generated data; returns the seconds it took."""
    start = time.perf_counter()
    drop_database(SOURCE_DB)
    create_database(SOURCE_DB)
    params = {
        "phrases": PHRASES,
        "words": WORDS,
        "cities": CITIES,
        "coaches": COACHES,
        "users": USERS,
        "sessions": SESSIONS,
        "messages": MESSAGES,
    }
    with admin_connection(SOURCE_DB) as conn:
        conn.execute("SET synchronous_commit = off")
        conn.execute("SET maintenance_work_mem = '256MB'")
        conn.execute(SCHEMA)
        for statement in FILL:
            conn.execute(statement, params if "%(" in statement else None)
        conn.execute(INDEXES)
        conn.execute("INSERT INTO bench_meta VALUES ('version', %s)", [DATA_VERSION])
        conn.execute("VACUUM ANALYZE")
    return time.perf_counter() - start


def table_rows() -> dict[str, int]:
    """Rows per table (this also reads every table once, so that the first timed run finds them cached)."""
    with admin_connection(SOURCE_DB) as conn:
        names = [row[0] for row in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
        return {name: conn.execute(f'SELECT count(*) FROM "{name}"').fetchone()[0] for name in sorted(names)}  # noqa: S608


# --- The control plane -----------------------------------------------------------------------------


def setup_control_plane() -> Any:
    """Django set up on bench_backups_cp, migrated; the ``bench`` target, with leftovers of an interrupted run gone."""
    if not database_exists(CONTROL_DB):
        create_database(CONTROL_DB)
    import django

    django.setup()
    from django.core.management import call_command

    from backups import engines, services
    from backups.models import Backup, BackupStatus, BackupTarget, Verification, VerificationResult
    from controlplane.audit import Actor

    call_command("migrate", verbosity=0)
    target = BackupTarget.objects.filter(name=TARGET_NAME).first()
    if target is None:
        target = services.target_create(data={"name": TARGET_NAME, "url_env": URL_ENV}, actor=Actor.system("bench"))
    elif target.url_env != URL_ENV:
        target = services.target_update(target=target, changes={"url_env": URL_ENV}, actor=Actor.system("bench"))
    # An interrupted run leaves a running row (which would block the next backup) and maybe a scratch database.
    for verification in Verification.objects.filter(backup__target=target, status=VerificationResult.RUNNING):
        if verification.scratch:
            engines.drop_database(
                engines.from_url(SOURCE_URL, variable=URL_ENV).with_name("postgres"), verification.scratch
            )
        verification.status = VerificationResult.FAILED
        verification.save(update_fields=["status"])
    Backup.objects.filter(target=target, status=BackupStatus.RUNNING).update(status=BackupStatus.FAILED)
    remove_backups(list(Backup.objects.filter(target=target)))
    return target


def remove_backups(backups: list[Any]) -> None:
    from backups import services

    store = services.storage()
    for backup in backups:
        if backup.file and store.exists(backup.file):
            store.delete(backup.file)
        backup.delete()


def tool(name: str) -> str:
    from backups import engines

    try:
        return engines.pg_tool(name)
    except engines.ToolMissing as exc:
        fail(str(exc))
        raise  # unreachable


def connection_args() -> list[str]:
    return ["--host", HOST, "--port", str(PORT), "--username", USER]


def run(args: list[str]) -> None:
    completed = subprocess.run(args, capture_output=True, text=True, check=False)  # noqa: S603 - our arguments
    if completed.returncode != 0:
        fail(f"{os.path.basename(args[0])} failed (exit {completed.returncode}):\n{completed.stderr}", 1)


# --- 1. Backup -------------------------------------------------------------------------------------


def peer_backup(pg_dump: str, directory: Path) -> tuple[float, int]:
    path = directory / "peer.pgdump"
    checkpoint()
    start = time.perf_counter()
    run([pg_dump, "-Fc", "-f", str(path), *connection_args(), SOURCE_DB])
    seconds = time.perf_counter() - start
    size = path.stat().st_size
    path.unlink()
    return seconds, size


def our_backup(target: Any) -> tuple[float, Any]:
    from backups import services
    from backups.models import BackupStatus
    from controlplane.audit import Actor

    checkpoint()
    start = time.perf_counter()
    backup = services.backup_create(target=target, actor=Actor.system("bench"))
    seconds = time.perf_counter() - start
    if backup.status != BackupStatus.SUCCEEDED:
        fail(f"our backup failed: {backup.error}", 1)
    return seconds, backup


# --- 2. Verification -------------------------------------------------------------------------------


def peer_verify(pg_restore: str, path: str) -> tuple[float, float]:
    """CREATE DATABASE + pg_restore, timed; then the DROP, timed apart."""
    from psycopg import sql

    drop_database(PEER_SCRATCH_DB)
    checkpoint()
    start = time.perf_counter()
    with admin_connection() as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(PEER_SCRATCH_DB)))
    flags = ["--no-owner", "--no-privileges", "--exit-on-error"]
    run([pg_restore, *flags, *connection_args(), "-d", PEER_SCRATCH_DB, path])
    seconds = time.perf_counter() - start
    start = time.perf_counter()
    drop_database(PEER_SCRATCH_DB)
    return seconds, time.perf_counter() - start


def our_verify(backup: Any) -> tuple[float, Any]:
    from backups import services
    from backups.models import VerificationResult
    from controlplane.audit import Actor

    checkpoint()
    start = time.perf_counter()
    verification = services.backup_verify(backup=backup, actor=Actor.system("bench"))
    seconds = time.perf_counter() - start
    if verification.status != VerificationResult.PASSED:
        checks = ", ".join(f"{c['name']} {c['status']}" for c in verification.checks)
        fail(f"our verification failed at {verification.failed_check}: {verification.error} ({checks})", 1)
    return seconds, verification


# --- Report ----------------------------------------------------------------------------------------


def verdict(ratio: float, goal: float) -> str:
    return "met" if ratio <= goal else "MISSED"


def table(rows: list[tuple[str, float, float, float]]) -> None:
    print()
    print(f"{'figure':50} {'ours':>9} {'peer':>9} {'ratio':>7}  goal")
    for label, ours, peer, goal in rows:
        ratio = ours / peer
        print(f"{label:50} {ours:8.2f}s {peer:8.2f}s {ratio:7.3f}  <= {goal}  {verdict(ratio, goal)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="rounds per figure, each one peer run and one of ours")
    parser.add_argument("--regenerate", action="store_true", help="rebuild the source database even if it is ready")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")

    configure_environment()
    admin_connection().close()  # the server answers, or a clear message
    os.chdir(BASE_DIR)
    target = setup_control_plane()
    from backups import engines, services

    pg_dump, pg_restore = tool("pg_dump"), tool("pg_restore")  # or a clear message

    if args.regenerate or not source_is_ready():
        seconds = generate_source()
        print(f"source {SOURCE_DB}: generated in {seconds:.1f} s (generate_series in the server, then VACUUM ANALYZE)")
    else:
        print(f"source {SOURCE_DB}: reused from an earlier run (--regenerate rebuilds it)")
    size = database_size(SOURCE_DB)
    if size < MIN_BYTES:
        fail(f"{SOURCE_DB} is {size / MiB:.0f} MiB, less than {MIN_BYTES / MiB:.0f} MiB: raise the row counts", 1)
    rows = table_rows()
    print(f"source size: pg_database_size('{SOURCE_DB}') = {size:,} bytes ({size / MiB:.1f} MiB)")
    print("source rows: " + ", ".join(f"{name} {count:,}" for name, count in rows.items()))

    try:
        amcheck = f"{engines.pg_tool('pg_amcheck')} {engines.tool_version(engines.pg_tool('pg_amcheck'))}"
    except engines.ToolMissing:
        amcheck = "missing (ours skips the integrity check)"
    print(f"tools: pg_dump {pg_dump} {engines.tool_version(pg_dump)}, pg_restore {pg_restore}, pg_amcheck {amcheck}")
    load = os.getloadavg()[0]
    print(f"{os.cpu_count()} CPUs, load average {load:.2f}; {args.rounds} alternating rounds per figure")

    peer_dir = Path(tempfile.mkdtemp(prefix="peer-", dir=VAR_DIR))
    ours_backups: list[Any] = []
    try:
        print("\n1. backup time: bare pg_dump -Fc -f <file> (peer) vs backups.services.backup_create (ours)")
        peer_b, ours_b = [], []
        for index in range(args.rounds):
            seconds, peer_size = peer_backup(pg_dump, peer_dir)
            peer_b.append(seconds)
            seconds, backup = our_backup(target)
            ours_backups.append(backup)
            ours_b.append(seconds)
            print(
                f"  round {index + 1}: peer {peer_b[-1]:6.2f} s ({peer_size / MiB:.1f} MiB)   "
                f"ours {ours_b[-1]:6.2f} s ({backup.size_bytes / MiB:.1f} MiB)   ratio {ours_b[-1] / peer_b[-1]:.3f}",
                flush=True,
            )

        backup = ours_backups[-1]
        path = services.storage().path(backup.file)
        print(
            f"\n2. verification time of backup #{backup.pk} ({backup.size_bytes / MiB:.1f} MiB): "
            "CREATE DATABASE ... TEMPLATE template0 + bare pg_restore (peer, the CREATE DATABASE included, "
            "DROP not) vs backups.services.backup_verify (ours, CREATE to DROP)"
        )
        peer_v, ours_v, verifications = [], [], []
        for index in range(args.rounds):
            seconds, drop_seconds = peer_verify(pg_restore, path)
            peer_v.append(seconds)
            seconds, verification = our_verify(backup)
            ours_v.append(seconds)
            verifications.append(verification)
            checks = " ".join(f"{c['name']}={c['ms'] / 1000:.2f}" for c in verification.checks)
            print(
                f"  round {index + 1}: peer {peer_v[-1]:6.2f} s (+ DROP {drop_seconds:.2f} s)   "
                f"ours {ours_v[-1]:6.2f} s [{checks}]   ratio {ours_v[-1] / peer_v[-1]:.3f}",
                flush=True,
            )
    finally:
        shutil.rmtree(peer_dir, ignore_errors=True)
        drop_database(PEER_SCRATCH_DB)
        remove_backups(ours_backups)

    median_round = ours_v.index(statistics.median_low(ours_v))
    chosen = verifications[median_round]
    accounted = sum(check["ms"] for check in chosen.checks)
    print(f"\nour verification, median round ({median_round + 1}, {ours_v[median_round]:.2f} s), per check:")
    for check in chosen.checks:
        share = check["ms"] / (ours_v[median_round] * 1000)
        print(f"  {check['name']:12} {check['ms']:8,} ms  {share:6.1%}  {check['status']:5} {check['detail'][:90]}")
    other = ours_v[median_round] * 1000 - accounted
    print(
        f"  {'(rest)':12} {other:8,.0f} ms  {other / (ours_v[median_round] * 1000):6.1%}        "
        "DROP DATABASE, bookkeeping rows, audit"
    )

    table(
        [
            (
                f"backup time ({size / MiB:.0f} MiB database)",
                statistics.median(ours_b),
                statistics.median(peer_b),
                BACKUP_GOAL,
            ),
            (
                "verification time (peer: CREATE DB + pg_restore)",
                statistics.median(ours_v),
                statistics.median(peer_v),
                VERIFY_GOAL,
            ),
        ]
    )
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
