"""Taking a backup: the stored file, its size and checksum, tool versions and the row counts of its snapshot."""

from __future__ import annotations

import hashlib
import sqlite3
import stat
import subprocess
import threading
import time

import psycopg
import pytest
from django.db import connection

from backups import engines
from backups.models import Backup, BackupStatus, BackupTarget
from backups.services import AlreadyRunning, backup_create, backup_start, backup_verify, storage
from controlplane.models import AuditEvent
from tests.backups.conftest import PG_ROWS, SQLITE_ROWS, SYSTEM

pytestmark = pytest.mark.django_db


def _assert_stored(backup: Backup, backup_dirs) -> None:
    """The file the row names is in BACKUP_DIR, complete: its size and sha256 are the recorded ones."""
    path = backup_dirs.backups / backup.file
    data = path.read_bytes()
    assert len(data) == backup.size_bytes > 0
    assert hashlib.sha256(data).hexdigest() == backup.sha256
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert backup_dirs.files() == [backup.file]  # nothing else: no partial file, no second copy


@pytest.mark.service("postgres")
def test_a_postgresql_backup_is_a_custom_format_dump_with_its_row_counts(pg_source, backup_dirs):
    backup = backup_create(target=pg_source.target, actor=SYSTEM)

    assert (backup.status, backup.error, backup.engine) == (BackupStatus.SUCCEEDED, "", "postgresql")
    assert backup.file.startswith(f"{pg_source.target.name}/") and backup.file.endswith(".pgdump")
    _assert_stored(backup, backup_dirs)
    assert backup.manifest["tables"] == PG_ROWS
    assert set(backup.tool_versions) == {"pg_dump", "server"}
    assert all(version[0].isdigit() for version in backup.tool_versions.values())
    assert backup.finished_at >= backup.started_at and backup.duration_ms is not None
    # pg_restore reads it as an archive holding every table and the index.
    listing = subprocess.run(
        [engines.pg_tool("pg_restore"), "--list", str(backup_dirs.backups / backup.file)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for name in ("TABLE public customers", "TABLE billing invoices", "INDEX public orders_customer_idx"):
        assert name in listing
    event = AuditEvent.objects.get(action="backup.create")
    assert event.object_id == str(backup.pk) and event.after["sha256"] == backup.sha256
    assert event.actor_label == "tests"


def test_a_sqlite_backup_is_a_self_contained_copy(sqlite_source, backup_dirs):
    backup = backup_create(target=sqlite_source.target, actor=SYSTEM)

    assert (backup.status, backup.error, backup.engine) == (BackupStatus.SUCCEEDED, "", "sqlite")
    assert backup.file.endswith(".sqlite3")
    _assert_stored(backup, backup_dirs)
    assert backup.manifest["tables"] == SQLITE_ROWS and backup.manifest["schema_sha256"]
    assert backup.tool_versions == {"sqlite": sqlite3.sqlite_version}
    copy = sqlite3.connect(backup_dirs.backups / backup.file)
    assert copy.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert copy.execute("PRAGMA journal_mode").fetchone() == ("delete",)
    assert copy.execute("SELECT count(*) FROM orders").fetchone() == (1000,)
    copy.close()
    assert AuditEvent.objects.filter(action="backup.create", object_id=str(backup.pk)).exists()


def test_a_sqlite_source_in_wal_mode_is_copied_with_what_is_still_in_its_wal(sqlite_source, backup_dirs):
    writer = sqlite3.connect(sqlite_source.path)
    writer.execute("PRAGMA journal_mode=WAL")
    writer.execute("PRAGMA wal_autocheckpoint=0")  # the new rows stay in the -wal file
    writer.executemany("INSERT INTO audit_log (message) VALUES (?)", [("x",)] * 25)
    writer.commit()
    assert sqlite_source.path.with_name("app.sqlite3-wal").stat().st_size > 0
    try:
        backup = backup_create(target=sqlite_source.target, actor=SYSTEM)
    finally:
        writer.close()

    assert backup.status == BackupStatus.SUCCEEDED, backup.error
    assert backup.manifest["tables"]["audit_log"] == 25
    assert backup_dirs.files() == [backup.file]  # no -wal beside it: the copy needs none
    copy = sqlite3.connect(backup_dirs.backups / backup.file)
    assert copy.execute("SELECT count(*) FROM audit_log").fetchone() == (25,)
    copy.close()


@pytest.mark.service("postgres")
def test_row_counts_are_those_of_the_dumps_snapshot_not_of_a_later_moment(pg_source, backup_dirs):
    """A writer commits while the dump runs: neither the dump nor the counts see its rows."""
    blocker = psycopg.connect(pg_source.url)  # holds customers, so the dump waits after taking its snapshot
    blocker.execute("LOCK TABLE customers IN ACCESS EXCLUSIVE MODE")
    source = engines.from_url(pg_source.url, variable=pg_source.env)
    results: dict = {}

    def run() -> None:
        try:
            results["dump"] = engines.dump(source, "snapshot-test", timeout=60)
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            results["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not pg_source.query(
            "SELECT 1 FROM pg_stat_activity WHERE datname = %s AND application_name = 'controlplane-backups' "
            "AND wait_event_type = 'Lock'",
            [pg_source.name],
        ):
            assert time.monotonic() < deadline, "the dump never waited for the lock"
            time.sleep(0.05)
        # orders is counted after customers: counted outside the snapshot, it would show these rows.
        blocker.execute("INSERT INTO orders (customer_id, total) SELECT 1, 9.99 FROM generate_series(1, 7)")
        blocker.commit()
    finally:
        blocker.close()
        thread.join(60)
    assert "error" not in results, results.get("error")
    dump, cleanup = results["dump"]
    try:
        assert pg_source.rows()["public.orders"] == 1007
        assert dump.manifest["tables"] == PG_ROWS  # 1000 orders, as in the snapshot
        restored = engines.Verifier(
            engine="postgresql",
            source=source,
            scratch_server=None,
            manifest=dump.manifest,
            label=f"snap_{pg_source.server.label}",
            timeout=60,
        ).run(dump.path, expected_sha256=dump.sha256, expected_size=dump.size_bytes)
        assert [(c.name, c.status) for c in restored.checks][:3] == [
            ("checksum", "pass"),
            ("restore", "pass"),
            ("row_counts", "pass"),
        ]
    finally:
        cleanup()
    assert backup_dirs.files() == []
    assert pg_source.server.scratch_left() == []


def test_the_control_plane_own_database_is_backed_up_and_verifies(db, backup_dirs):
    """The target ``default``: whatever this run's database is (SQLite, or PostgreSQL in CI)."""
    target, _ = BackupTarget.objects.get_or_create(name="default", defaults={"url_env": ""})
    expected = "sqlite" if connection.vendor == "sqlite" else "postgresql"

    backup = backup_create(target=target, actor=SYSTEM)

    assert (backup.status, backup.engine) == (BackupStatus.SUCCEEDED, expected), backup.error
    assert (
        "backups_backuptarget" in backup.manifest["tables"]
        or "public.backups_backuptarget" in (backup.manifest["tables"])
    )
    verification = backup_verify(backup=backup, actor=SYSTEM)
    assert verification.status == "passed", verification.checks
    assert storage().exists(backup.file)


def test_one_backup_of_a_target_runs_at_a_time(sqlite_source, backup_dirs):
    running = backup_start(target=sqlite_source.target, actor=SYSTEM)
    with pytest.raises(AlreadyRunning, match="already running"):
        backup_create(target=sqlite_source.target, actor=SYSTEM)
    assert list(Backup.objects.filter(target=sqlite_source.target)) == [running]
    assert backup_dirs.files() == []
