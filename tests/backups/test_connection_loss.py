"""A connection that drops in the middle of a run: the source's (pg_dump or pg_restore cut off), the
control plane's own (where the row lives), or the whole worker killed. Each run ends recorded with the
real reason, and the next one starts at once instead of being refused as "already running"."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from types import SimpleNamespace
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from django.db import connection
from django.utils import timezone
from psycopg import sql

from backups.models import Backup, BackupStatus, Verification, VerificationResult
from backups.services import (
    AlreadyRunning,
    backup_create,
    backup_start,
    backup_verify,
    target_create,
    verification_start,
)
from controlplane.models import AuditEvent
from tests.backups.conftest import SYSTEM, pg_admin, pg_url
from tests.conftest import BASE_DIR, _service_problem, manage, subprocess_env, test_database_url
from tests.faultproxy import FaultProxy

LOST_CONNECTION = "server closed the connection unexpectedly"


# --- A source big enough that pg_dump runs for a while -------------------------------------------


@pytest.fixture(scope="module")
def big_database():
    """A database of 200 000 rows (a few MB of dump) on the test server, made once for this module."""
    if problem := _service_problem("postgres"):
        pytest.skip(problem)
    name = f"bk_big_{secrets.token_hex(4)}"
    with pg_admin() as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        with psycopg.connect(pg_url(name), autocommit=True) as conn:
            conn.execute(
                "CREATE TABLE big AS SELECT g AS id, md5(g::text) AS a, md5((g * 7)::text) AS b"
                " FROM generate_series(1, 200000) g"
            )
            conn.execute("ALTER TABLE big ADD PRIMARY KEY (id)")
        yield name
    finally:
        with pg_admin() as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def big(big_database, pg_server, monkeypatch):
    """A target ``pg-<label>`` whose URL variable names the big database; ``via(proxy)`` routes it through."""
    env = f"BK_BIG_{pg_server.label.upper()}"
    monkeypatch.setenv(env, pg_url(big_database))
    target = target_create(data={"name": f"pg-{pg_server.label}", "url_env": env}, actor=SYSTEM)

    def via(proxy: FaultProxy) -> str:
        url = through(proxy, pg_url(big_database))
        monkeypatch.setenv(env, url)
        return url

    return SimpleNamespace(target=target, name=big_database, server=pg_server, via=via)


def through(proxy: FaultProxy, url: str) -> str:
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    return urlunsplit(parts._replace(netloc=f"{userinfo}@127.0.0.1:{proxy.port}" if userinfo else proxy.address))


def proxy_to_postgres() -> FaultProxy:
    parts = urlsplit(pg_url("postgres"))
    return FaultProxy(parts.hostname or "127.0.0.1", parts.port or 5432)


class WhenCopying:
    """Runs ``fault`` once a COPY (pg_dump's or pg_restore's) is under way in a database named LIKE
    ``pattern``: the cut lands in the middle of the data, not before or after it."""

    def __init__(self, pattern: str, fault: Callable[[], None]) -> None:
        self.pattern = pattern
        self.fault = fault
        self.fired = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> WhenCopying:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _watch(self) -> None:
        with pg_admin() as conn:
            while not self._stop.is_set():
                copying = conn.execute(
                    "SELECT 1 FROM pg_stat_activity WHERE datname LIKE %s AND state = 'active'"
                    " AND query ILIKE 'COPY %%'",
                    [self.pattern],
                ).fetchone()
                if copying:
                    self.fault()
                    self.fired.set()
                    return
                time.sleep(0.02)


def _assert_failed_with_lost_connection(backup: Backup, big) -> None:
    backup.refresh_from_db()
    assert backup.status == BackupStatus.FAILED, backup.error
    assert backup.error.startswith(f"lost the connection to PostgreSQL database {big.name!r}"), backup.error
    assert "pg_dump failed (exit 1)" in backup.error and LOST_CONNECTION in backup.error
    assert backup.file == "" and backup.finished_at is not None
    event = AuditEvent.objects.get(action="backup.failed", object_id=str(backup.pk))
    assert event.after["error"] == backup.error


# --- (b) the source's connection cut mid-dump or mid-restore -------------------------------------


@pytest.mark.service("postgres")
@pytest.mark.django_db
def test_a_dump_cut_off_from_its_source_fails_naming_the_lost_connection_and_the_next_starts_at_once(big, backup_dirs):
    with proxy_to_postgres() as proxy:
        big.via(proxy)
        with WhenCopying(big.name, proxy.cut) as cut:
            backup = backup_create(target=big.target, actor=SYSTEM)
        assert cut.fired.is_set(), "the dump ended before the cut"

        _assert_failed_with_lost_connection(backup, big)
        assert backup_dirs.files() == []

        proxy.heal()
        second = backup_create(target=big.target, actor=SYSTEM)  # not refused: nothing is left running

    assert second.status == BackupStatus.SUCCEEDED, second.error
    assert second.manifest["tables"] == {"public.big": 200000}


@pytest.mark.service("postgres")
@pytest.mark.django_db
def test_a_restore_cut_off_from_the_scratch_server_fails_the_verification_and_leaves_no_scratch(big, settings):
    backup = backup_create(target=big.target, actor=SYSTEM)
    assert backup.status == BackupStatus.SUCCEEDED, backup.error
    with proxy_to_postgres() as proxy:
        settings.BACKUP_SCRATCH_DATABASE_URL = through(proxy, pg_url("postgres"))
        with WhenCopying(f"verify\\_%{big.server.label}%", proxy.cut) as cut:
            verification = backup_verify(backup=backup, actor=SYSTEM)
        assert cut.fired.is_set(), "the restore ended before the cut"

        assert verification.status == VerificationResult.FAILED
        assert verification.failed_check == "restore"
        assert verification.error.startswith("pg_restore failed (exit 1): "), verification.error
        assert LOST_CONNECTION in verification.error
        assert verification.scratch.startswith("verify_") and verification.scratch_dropped
        assert big.server.scratch_left() == []

        again = backup_verify(backup=backup, actor=SYSTEM)  # the next one starts at once
    assert again.status == VerificationResult.PASSED, again.error
    assert big.server.scratch_left() == []


# --- (a) the control plane's own connection dies during the dump ---------------------------------


@pytest.mark.service("postgres")
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("source", ["cut too", "intact"])
def test_the_outcome_is_recorded_when_the_control_planes_own_connection_died_during_the_dump(big, backup_dirs, source):
    if connection.vendor != "postgresql":
        pytest.skip("the suite runs on SQLite: run it with DATABASE_URL=postgres://... to kill its connection")
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        own_pid = cursor.fetchone()[0]

    def faults() -> None:
        with pg_admin() as admin:
            assert admin.execute("SELECT pg_terminate_backend(%s)", [own_pid]).fetchone()[0]
        if source == "cut too":
            proxy.cut()

    with proxy_to_postgres() as proxy:
        big.via(proxy)
        with WhenCopying(big.name, faults) as fired:
            backup = backup_create(target=big.target, actor=SYSTEM)
        assert fired.fired.is_set(), "the dump ended before the faults"
        proxy.heal()
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            assert cursor.fetchone()[0] != own_pid  # recorded on a new connection

        if source == "cut too":
            _assert_failed_with_lost_connection(backup, big)
            assert backup_create(target=big.target, actor=SYSTEM).status == BackupStatus.SUCCEEDED
        else:
            backup.refresh_from_db()
            assert backup.status == BackupStatus.SUCCEEDED, backup.error
            assert (backup_dirs.backups / backup.file).stat().st_size == backup.size_bytes
            assert AuditEvent.objects.filter(action="backup.create", object_id=str(backup.pk)).exists()


# --- A worker that stopped without recording anything --------------------------------------------


def test_a_backup_whose_heartbeat_stopped_gives_way_to_the_next_at_once(sqlite_source, settings):
    lost = backup_start(target=sqlite_source.target, actor=SYSTEM)
    silent_since = timezone.now() - timedelta(seconds=settings.BACKUP_HEARTBEAT_TIMEOUT_SECONDS + 5)
    Backup.objects.filter(pk=lost.pk).update(heartbeat_at=silent_since)

    backup = backup_create(target=sqlite_source.target, actor=SYSTEM)

    assert backup.status == BackupStatus.SUCCEEDED
    lost.refresh_from_db()
    assert lost.status == BackupStatus.FAILED
    assert lost.error.startswith(f"worker stopped: no progress since {silent_since:%Y-%m-%d %H:%M:%S} UTC")
    assert AuditEvent.objects.get(action="backup.failed", object_id=str(lost.pk)).actor_label == "backups"

    beating = backup_start(target=sqlite_source.target, actor=SYSTEM)  # a live worker's run is not taken
    Backup.objects.filter(pk=beating.pk).update(heartbeat_at=timezone.now() - timedelta(seconds=30))
    with pytest.raises(AlreadyRunning):
        backup_create(target=sqlite_source.target, actor=SYSTEM)


def test_a_verification_whose_heartbeat_stopped_gives_way_to_the_next_at_once(sqlite_source, settings):
    backup = backup_create(target=sqlite_source.target, actor=SYSTEM)
    lost = verification_start(backup=backup, actor=SYSTEM)
    silent_since = timezone.now() - timedelta(seconds=settings.BACKUP_HEARTBEAT_TIMEOUT_SECONDS + 5)
    Verification.objects.filter(pk=lost.pk).update(heartbeat_at=silent_since)

    verification = backup_verify(backup=backup, actor=SYSTEM)

    assert verification.status == VerificationResult.PASSED
    lost.refresh_from_db()
    assert (lost.status, lost.failed_check) == (VerificationResult.FAILED, "setup")
    assert lost.error.startswith(f"worker stopped: no progress since {silent_since:%Y-%m-%d %H:%M:%S} UTC")


@pytest.mark.service("postgres")
@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_mid_dump_is_seen_by_its_silent_heartbeat_within_seconds(
    pg_source, backup_dirs, settings, tmp_path
):
    """A real ``manage.py backup`` beats while pg_dump waits on a lock; killed (no failure can be
    recorded), its row is taken as lost once the heartbeat is silent, not after the 3-hour timeout."""
    settings.BACKUP_HEARTBEAT_TIMEOUT_SECONDS = 3
    blocker = psycopg.connect(pg_source.url)
    blocker.execute("LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")  # pg_dump waits here: a long dump
    log = tmp_path / "backup.log"
    worker = subprocess.Popen(
        manage("backup", pg_source.target.name),
        cwd=BASE_DIR,
        env=subprocess_env(
            DATABASE_URL=test_database_url(),
            BACKUP_HEARTBEAT_SECONDS="1",
            BACKUP_DIR=str(backup_dirs.backups),
            BACKUP_TMP_DIR=str(backup_dirs.partial),
        ),
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its pg_dump is killed with it, as a stopped service's would be
    )
    try:
        deadline = time.monotonic() + 20
        running = None
        while time.monotonic() < deadline:
            running = Backup.objects.filter(target=pg_source.target).first()
            if running is not None and running.heartbeat_at > running.started_at + timedelta(seconds=1):
                break  # beating while the dump waits
            time.sleep(0.2)
        else:
            pytest.fail(f"no heartbeat from the worker: {log.read_text()[-2000:]}")
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(timeout=10)
        with pytest.raises(AlreadyRunning):  # the last beat is fresh: the worker may still be there
            backup_create(target=pg_source.target, actor=SYSTEM)
        blocker.close()

        time.sleep(3.5)
        backup = backup_create(target=pg_source.target, actor=SYSTEM)
    finally:
        blocker.close()
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)

    assert backup.status == BackupStatus.SUCCEEDED, backup.error
    running.refresh_from_db()
    assert running.status == BackupStatus.FAILED
    assert running.error.startswith("worker stopped: no progress since "), running.error
    assert running.heartbeat_at > running.started_at
