"""Taking a backup: the stored file, its size and checksum, tool versions and the row counts of its snapshot."""

from __future__ import annotations

import configparser
import hashlib
import logging
import sqlite3
import stat
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from django.db import connection

from backups import engines
from backups.models import Backup, BackupStatus, BackupTarget
from backups.services import AlreadyRunning, backup_create, backup_start, backup_verify, storage
from controlplane.models import AuditEvent
from tests.backups.conftest import PG_ROWS, SQLITE_ROWS, SYSTEM
from tests.conftest import BASE_DIR

pytestmark = pytest.mark.django_db


def _assert_stored(backup: Backup, backup_dirs) -> None:
    """The file the row names is in BACKUP_DIR, complete: its size and sha256 are the recorded ones."""
    path = backup_dirs.backups / backup.file
    data = path.read_bytes()
    assert len(data) == backup.size_bytes > 0
    assert hashlib.sha256(data).hexdigest() == backup.sha256
    assert _mode(path) == 0o600
    # Every folder on the way is its owner's alone: the backups, the target's, the in-progress one.
    assert [_mode(folder) for folder in (backup_dirs.backups, path.parent, backup_dirs.partial)] == [0o700] * 3
    assert backup_dirs.files() == [backup.file]  # nothing else: no partial file, no second copy


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


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


# --- Dumps are their owner's alone ---------------------------------------------------------------


class _DumpInThread:
    """``engines.dump`` running in a thread, as the worker runs it, to be looked at while it is held up."""

    def __init__(self, source: engines.Database) -> None:
        self.results: dict = {}
        self.thread = threading.Thread(target=self._run, args=(source,), daemon=True)
        self.thread.start()

    def _run(self, source: engines.Database) -> None:
        try:
            self.results["dump"] = engines.dump(source, "in-progress", timeout=60)
        except Exception as exc:  # noqa: BLE001 - reported by finish()
            self.results["error"] = exc

    def file_while(self, held_up: Callable[[], bool], folder: Path) -> Path:
        """The file the dump is writing, once ``held_up()`` says the dump waits on a lock."""
        deadline = time.monotonic() + 20
        while not (held_up() and (found := list(folder.glob("in-progress.*.partial")))):
            assert time.monotonic() < deadline and self.thread.is_alive(), f"the dump never waited: {self.results}"
            time.sleep(0.05)
        return found[0]

    def finish(self) -> engines.Dump:
        self.thread.join(60)
        assert "error" not in self.results, self.results.get("error")
        dump, cleanup = self.results["dump"]
        cleanup()
        return dump


def test_a_sqlite_dump_in_progress_is_readable_by_its_owner_alone(sqlite_source, backup_dirs):
    backup_dirs.partial.mkdir(mode=0o755, parents=True)  # as an older release left it
    holder = sqlite3.connect(sqlite_source.path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # the copy waits for this lock with its file already open
    dump = _DumpInThread(engines.from_url(sqlite_source.url, variable=sqlite_source.env))
    try:
        time.sleep(0.3)  # long enough for the copy to have reached the lock
        partial = dump.file_while(lambda: dump.thread.is_alive(), backup_dirs.partial)
        assert (_mode(partial), _mode(backup_dirs.partial)) == (0o600, 0o700)
    finally:
        holder.rollback()
        holder.close()
    assert dump.finish().manifest["tables"] == SQLITE_ROWS


@pytest.mark.service("postgres")
def test_a_postgresql_dump_in_progress_is_readable_by_its_owner_alone(pg_source, backup_dirs):
    blocker = psycopg.connect(pg_source.url)
    blocker.execute("LOCK TABLE customers IN ACCESS EXCLUSIVE MODE")  # pg_dump waits, its output file open
    dump = _DumpInThread(engines.from_url(pg_source.url, variable=pg_source.env))
    try:
        partial = dump.file_while(
            lambda: bool(
                pg_source.query(
                    "SELECT 1 FROM pg_stat_activity WHERE datname = %s AND application_name = 'controlplane-backups' "
                    "AND wait_event_type = 'Lock'",
                    [pg_source.name],
                )
            ),
            backup_dirs.partial,
        )
        assert (_mode(partial), _mode(backup_dirs.partial)) == (0o600, 0o700)
    finally:
        blocker.rollback()
        blocker.close()
    assert dump.finish().manifest["tables"] == PG_ROWS


def test_backup_folders_left_open_are_narrowed_once_and_said_so(sqlite_source, backup_dirs, caplog):
    for folder in (backup_dirs.backups, backup_dirs.backups / sqlite_source.target.name, backup_dirs.partial):
        folder.mkdir(mode=0o755, parents=True, exist_ok=True)
        folder.chmod(0o755)
    with caplog.at_level(logging.WARNING, logger="backups.engines"):
        first = backup_create(target=sqlite_source.target, actor=SYSTEM)
        second = backup_create(target=sqlite_source.target, actor=SYSTEM)

    assert first.status == second.status == BackupStatus.SUCCEEDED
    for backup in (first, second):
        assert _mode(backup_dirs.backups / backup.file) == 0o600
    assert [_mode(folder) for folder in (backup_dirs.backups, backup_dirs.partial)] == [0o700, 0o700]
    warned = sorted(record.getMessage() for record in caplog.records)
    assert warned == sorted(
        f"backup directory {folder} was mode 0755, open to others: set to 0700"
        for folder in (backup_dirs.backups, backup_dirs.backups / sqlite_source.target.name, backup_dirs.partial)
    )


@pytest.mark.parametrize("unit", ["web", "worker", "beat"])
def test_every_systemd_unit_runs_with_a_private_umask(unit):
    """Whatever a process writes without choosing a mode (a tool's own files, logs) is not world-readable."""
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # systemd keys are case-sensitive
    parser.read_string((BASE_DIR / "deploy" / "systemd" / f"controlplane-{unit}.service").read_text())
    assert parser["Service"].get("UMask") == "0077"
