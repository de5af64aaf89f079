"""Faults an operator meets: a damaged dump, a dump that does not restore, missing tools, an
unreachable database, a full disk, a hung dump. Each leaves a clear message and nothing that looks
like a complete backup."""

from __future__ import annotations

import contextlib
import hashlib
import socket
import subprocess
import threading
import time
from pathlib import Path

import psycopg
import pytest

from backups.models import Backup, BackupStatus, VerificationResult
from backups.services import backup_create, backup_verify
from controlplane.models import AuditEvent
from tests.backups.conftest import SYSTEM, point_backups_at

pytestmark = pytest.mark.django_db


def _checks(verification) -> list[tuple[str, str]]:
    return [(check["name"], check["status"]) for check in verification.checks]


def _assert_failed_cleanly(backup: Backup, backup_dirs, message: str) -> None:
    """FAILED with ``message`` in its error, no file named, none left on disk, audited."""
    backup.refresh_from_db()
    assert backup.status == BackupStatus.FAILED
    assert message in backup.error, backup.error
    assert backup.file == "" and backup.finished_at is not None
    assert backup_dirs.files() == []
    event = AuditEvent.objects.get(action="backup.failed", object_id=str(backup.pk))
    assert event.after["error"] == backup.error


# --- A damaged dump ------------------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["truncated", "altered"])
def test_a_damaged_dump_fails_at_the_checksum_before_any_restore(source, backup_dirs, damage):
    backup = backup_create(target=source.target, actor=SYSTEM)
    path = backup_dirs.backups / backup.file
    data = bytearray(path.read_bytes())
    if damage == "truncated":
        del data[len(data) // 2 :]
    else:
        data[len(data) // 2] ^= 0xFF  # one bit pattern changed, same size
    path.write_bytes(bytes(data))

    verification = backup_verify(backup=backup, actor=SYSTEM)

    assert _checks(verification) == [("checksum", "fail")]
    assert verification.failed_check == "checksum"
    assert verification.error.startswith("the file does not match its recorded checksum (altered or truncated)")
    assert f"{len(data)} bytes" in verification.error and f"recorded {backup.size_bytes} bytes" in verification.error
    assert verification.scratch == "" and verification.restore_ms is None
    backup.refresh_from_db()
    assert backup.verification == VerificationResult.FAILED
    assert AuditEvent.objects.get(action="backup.verify_failed").after["failed_check"] == "checksum"


@pytest.mark.parametrize("content", ["garbage", "cut short"])
def test_a_dump_that_passes_the_checksum_but_does_not_restore_fails_with_the_tools_message(
    source, backup_dirs, content
):
    backup = backup_create(target=source.target, actor=SYSTEM)
    path = backup_dirs.backups / backup.file
    data = b"not a database dump\n" * 200 if content == "garbage" else path.read_bytes()[: backup.size_bytes * 2 // 3]
    path.write_bytes(data)
    backup.sha256, backup.size_bytes = hashlib.sha256(data).hexdigest(), len(data)
    backup.save()

    verification = backup_verify(backup=backup, actor=SYSTEM)

    assert _checks(verification)[:2] == [("checksum", "pass"), ("restore", "fail")]
    assert verification.failed_check == "restore"
    if backup.engine == "postgresql":
        # pg_restore's parallel workers write their lines at once: the error's lines may interleave.
        assert verification.error.startswith("pg_restore failed (exit 1): pg_restore")
        assert "error:" in verification.error
        expected = "input file does not appear to be a valid archive" if content == "garbage" else "could not read"
        assert expected in verification.error
        assert source.server.scratch_left() == []  # created for the restore, dropped after its failure
    else:
        expected = "file is not a database" if content == "garbage" else "database disk image is malformed"
        assert verification.error == f"the dump does not open as a SQLite database: {expected}"
        assert [name for name in backup_dirs.files() if "verify_" in name] == []
    assert verification.scratch.startswith("verify_") and verification.scratch_dropped


# --- Missing tools, unreachable databases --------------------------------------------------------


@pytest.mark.service("postgres")
def test_pg_dump_missing_fails_the_backup_with_a_clear_message_and_no_file(
    pg_source, backup_dirs, settings, tmp_path, django_capture_on_commit_callbacks
):
    empty = tmp_path / "no-tools"
    empty.mkdir()
    settings.PG_BIN_DIR = str(empty)

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        backup = backup_create(target=pg_source.target, actor=SYSTEM)

    _assert_failed_cleanly(
        backup,
        backup_dirs,
        f"pg_dump not found in PG_BIN_DIR ({empty}): install the PostgreSQL client tools or set PG_BIN_DIR",
    )
    assert len(callbacks) == 1  # an alert evaluation, queued after the failure commits


@pytest.mark.service("postgres")
def test_pg_restore_missing_fails_the_verification_and_drops_the_scratch(pg_source, settings, tmp_path):
    backup = backup_create(target=pg_source.target, actor=SYSTEM)
    settings.PG_BIN_DIR = str(tmp_path)  # no pg_restore here
    verification = backup_verify(backup=backup, actor=SYSTEM)
    assert verification.failed_check == "restore"
    assert verification.error.startswith(f"pg_restore not found in PG_BIN_DIR ({tmp_path})")
    assert verification.scratch_dropped and pg_source.server.scratch_left() == []


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.service("postgres")
def test_an_unreachable_postgresql_server_fails_the_backup_naming_host_not_password(
    pg_source, backup_dirs, monkeypatch
):
    port = _closed_port()
    monkeypatch.setenv(pg_source.env, f"postgres://app:s3cret-pw@127.0.0.1:{port}/shop")

    backup = backup_create(target=pg_source.target, actor=SYSTEM)

    _assert_failed_cleanly(backup, backup_dirs, f"cannot connect to PostgreSQL database 'shop' on 127.0.0.1:{port}: ")
    assert "refused" in backup.error.lower()
    assert "s3cret-pw" not in backup.error
    assert not [event for event in AuditEvent.objects.all() if "s3cret-pw" in str(event.after)]


@pytest.mark.service("postgres")
def test_a_database_that_does_not_exist_fails_the_backup_saying_so(pg_source, backup_dirs, monkeypatch):
    monkeypatch.setenv(pg_source.env, pg_source.url + "_gone")
    backup = backup_create(target=pg_source.target, actor=SYSTEM)
    _assert_failed_cleanly(backup, backup_dirs, f'database "{pg_source.name}_gone" does not exist')


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (None, "environment variable {env} is not set (it should hold the database URL)"),
        ("", "{env} is empty"),
        ("mysql://app:s3cret-pw@db/shop", "unsupported database engine 'django.db.backends.mysql'"),
        ("postgres://app:s3cret-pw@db", "{env} names no database (the path after the host)"),
        ("sqlite:////nonexistent/dir/app.sqlite3", "SQLite file /nonexistent/dir/app.sqlite3 does not exist"),
    ],
)
def test_a_bad_or_missing_source_url_fails_the_backup_with_a_clear_message(
    sqlite_source, backup_dirs, monkeypatch, value, message
):
    if value is None:
        monkeypatch.delenv(sqlite_source.env)
    else:
        monkeypatch.setenv(sqlite_source.env, value)
    with warnings_ignored():
        backup = backup_create(target=sqlite_source.target, actor=SYSTEM)
    _assert_failed_cleanly(backup, backup_dirs, message.format(env=sqlite_source.env))
    assert "s3cret-pw" not in backup.error


@contextlib.contextmanager
def warnings_ignored():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # django-environ warns about an engine it does not know
        yield


# --- A full disk ---------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    """small_disk(name) -> a folder on a 64 KiB tmpfs of its own, unmounted after the test."""
    mounted: list[Path] = []

    def mount(name: str) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        result = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)], capture_output=True, text=True
        )
        if result.returncode != 0:
            pytest.skip(f"cannot mount a small tmpfs to fill up: {result.stderr.strip() or result.returncode}")
        mounted.append(folder)
        return folder

    yield mount
    for folder in mounted:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def _fill_source(source) -> None:
    """About 256 KiB of rows that compress poorly: more than the small disk holds, even as a pg_dump -Fc."""
    rows = (
        "SELECT string_agg(md5(random()::text || g || i), '') FROM generate_series(1, 2000) g, generate_series(1, 4) i"
    )
    if hasattr(source, "server"):
        source.query(f"INSERT INTO audit_log (message) {rows} GROUP BY g")  # noqa: S608 - our SQL
    else:
        import secrets
        import sqlite3

        conn = sqlite3.connect(source.path)
        with conn:
            conn.executemany(
                "INSERT INTO audit_log (message) VALUES (?)", [(secrets.token_hex(64),) for _ in range(2000)]
            )
        conn.close()


def test_a_disk_filling_up_while_writing_fails_the_backup_and_leaves_nothing(source, backup_dirs, small_disk, settings):
    disk = small_disk("disk")
    backup_dirs.backups, backup_dirs.partial = disk / "backups", disk / "partial"
    point_backups_at(settings, backup_dirs.backups, backup_dirs.partial)
    _fill_source(source)

    backup = backup_create(target=source.target, actor=SYSTEM)

    no_space = "No space left on device" if hasattr(source, "server") else "database or disk is full"
    _assert_failed_cleanly(backup, backup_dirs, no_space)
    assert "no backup file was kept" in backup.error
    assert [path.name for path in disk.rglob("*") if path.is_file()] == []


def test_a_full_backups_disk_with_the_dump_written_elsewhere_keeps_no_partial_copy(
    source, backup_dirs, small_disk, settings
):
    """BACKUP_TMP_DIR on another file system: the finished dump is copied, not renamed, and the copy fails."""
    backup_dirs.backups = small_disk("backups")
    point_backups_at(settings, backup_dirs.backups, backup_dirs.partial)
    _fill_source(source)

    backup = backup_create(target=source.target, actor=SYSTEM)

    _assert_failed_cleanly(backup, backup_dirs, "storing the dump failed: No space left on device")
    assert "no backup file was kept" in backup.error


# --- A hung dump ---------------------------------------------------------------------------------


@pytest.mark.service("postgres")
def test_a_dump_that_waits_on_a_lock_is_stopped_at_the_timeout(pg_source, backup_dirs, settings):
    settings.BACKUP_TIMEOUT_SECONDS = 1
    blocker = psycopg.connect(pg_source.url)
    blocker.execute("LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")  # a long migration, say
    release = threading.Timer(15, blocker.close)  # lets the test end even when the timeout does not work
    release.start()
    try:
        start = time.monotonic()
        backup = backup_create(target=pg_source.target, actor=SYSTEM)
        elapsed = time.monotonic() - start
    finally:
        release.cancel()
        blocker.close()
    _assert_failed_cleanly(backup, backup_dirs, "pg_dump did not finish within 1 s and was stopped")
    assert elapsed < 10, f"the backup took {elapsed:.1f} s with a 1 s timeout"
