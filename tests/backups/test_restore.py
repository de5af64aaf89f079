"""Restoring a backup: checksum first, never over the backed-up database unless the operator says so, audited."""

from __future__ import annotations

import hashlib
import os
import sqlite3

import pytest

from backups import engines
from backups.models import Backup, BackupStatus
from backups.services import backup_create, backup_restore
from controlplane.models import AuditEvent
from tests.backups.conftest import PG_ROWS, SPELLINGS, SQLITE_ROWS, SYSTEM, pg_url, spell

pytestmark = pytest.mark.django_db


def _restore_events() -> list[str]:
    return list(
        AuditEvent.objects.filter(action__startswith="backup.restore").order_by("id").values_list("action", flat=True)
    )


def _expected_rows(source) -> dict[str, int]:
    return PG_ROWS if hasattr(source, "server") else SQLITE_ROWS


def _delete_some_orders(source) -> None:
    if hasattr(source, "server"):
        source.query("DELETE FROM billing.invoices")
        source.query("DELETE FROM orders WHERE id > 400")
    else:
        with sqlite3.connect(source.path) as conn:
            conn.execute("DELETE FROM orders WHERE id > 400")
        conn.close()


def _orders(source) -> int:
    rows = source.rows()
    return rows.get("public.orders", rows.get("orders"))


def test_the_backed_up_database_is_refused_unless_overwrite_source_then_restored(source):
    backup = backup_create(target=source.target, actor=SYSTEM)
    _delete_some_orders(source)  # the accident the restore repairs
    # The same database however the URL spells it (localhost for 127.0.0.1).
    same = source.url.replace("127.0.0.1", "localhost")

    with pytest.raises(engines.ScratchIsSource, match="refusing to restore into the backed-up database itself"):
        backup_restore(backup=backup, into_url=same, overwrite_source=False, actor=SYSTEM)
    assert _orders(source) == 400 and _restore_events() == []

    ms = backup_restore(backup=backup, into_url=source.url, overwrite_source=True, actor=SYSTEM)

    assert isinstance(ms, int) and ms >= 0
    assert source.rows() == _expected_rows(source)
    assert _restore_events() == ["backup.restore_started", "backup.restore"]
    started = AuditEvent.objects.get(action="backup.restore_started")
    assert started.after["overwrites_source"] is True and started.object_id == str(backup.pk)
    assert "postgres://" not in str(started.after) and "sqlite:///" not in str(started.after)


@pytest.mark.parametrize("link", ["hard link", "symlink"])
def test_a_link_to_the_sqlite_source_is_the_backed_up_database_and_refused(sqlite_source, link):
    backup = backup_create(target=sqlite_source.target, actor=SYSTEM)
    _delete_some_orders(sqlite_source)
    before = hashlib.sha256(sqlite_source.path.read_bytes()).hexdigest()
    into = sqlite_source.path.with_name("elsewhere.sqlite3")
    if link == "hard link":
        os.link(sqlite_source.path, into)
    else:
        into.symlink_to(sqlite_source.path)

    with pytest.raises(engines.ScratchIsSource, match="refusing to restore into the backed-up database itself"):
        backup_restore(backup=backup, into_url=f"sqlite:///{into}", overwrite_source=False, actor=SYSTEM)

    assert hashlib.sha256(sqlite_source.path.read_bytes()).hexdigest() == before
    assert _orders(sqlite_source) == 400 and _restore_events() == []


@pytest.mark.service("postgres")
@pytest.mark.parametrize("spelling", SPELLINGS)
def test_the_postgresql_source_under_another_url_is_refused(pg_source, pg_other_user, spelling):
    backup = backup_create(target=pg_source.target, actor=SYSTEM)
    _delete_some_orders(pg_source)
    user, password = pg_other_user
    into = spell(pg_source.url, spelling, user=user, password=password)

    with pytest.raises(engines.ScratchIsSource, match="refusing to restore into the backed-up database itself"):
        backup_restore(backup=backup, into_url=into, overwrite_source=False, actor=SYSTEM)

    assert _orders(pg_source) == 400 and _restore_events() == []


@pytest.mark.service("postgres")
def test_a_postgresql_source_that_does_not_answer_cannot_be_told_from_the_target_so_is_refused(pg_source, monkeypatch):
    backup = backup_create(target=pg_source.target, actor=SYSTEM)
    into = pg_source.server.create("bk_dst")
    monkeypatch.setenv(pg_source.env, pg_source.url + "_gone")

    with pytest.raises(engines.ScratchIsSource, match="it may be the backed-up database, which cannot be identified"):
        backup_restore(backup=backup, into_url=pg_url(into), overwrite_source=False, actor=SYSTEM)
    assert _restore_events() == []

    backup_restore(backup=backup, into_url=pg_url(into), overwrite_source=True, actor=SYSTEM)
    assert AuditEvent.objects.get(action="backup.restore_started").after["overwrites_source"] is False


def test_the_control_planes_own_database_is_refused_even_with_overwrite(sqlite_source, settings):
    own = settings.DATABASES["default"]
    if own["ENGINE"] != engines.SQLITE_ENGINE:
        pytest.skip("the control plane runs on PostgreSQL here")
    backup = backup_create(target=sqlite_source.target, actor=SYSTEM)

    with pytest.raises(engines.ScratchIsSource, match="refusing to restore into the control plane's own database"):
        backup_restore(backup=backup, into_url=f"sqlite:///{own['NAME']}", overwrite_source=True, actor=SYSTEM)

    assert _restore_events() == []
    assert Backup.objects.filter(pk=backup.pk).exists()  # the control plane's rows are still there


@pytest.mark.service("postgres")
def test_a_postgresql_backup_restores_into_another_database(pg_source):
    backup = backup_create(target=pg_source.target, actor=SYSTEM)
    into = pg_source.server.create("bk_dst")

    backup_restore(backup=backup, into_url=pg_url(into), overwrite_source=False, actor=SYSTEM)

    with engines.from_url(pg_url(into), variable="into").connect() as conn:
        restored = engines.pg_row_counts(conn, engines.pg_tables(conn))
    assert restored == PG_ROWS
    assert AuditEvent.objects.get(action="backup.restore_started").after["overwrites_source"] is False


def test_a_sqlite_backup_restores_into_a_new_file(sqlite_source, tmp_path):
    backup = backup_create(target=sqlite_source.target, actor=SYSTEM)
    into = tmp_path / "restored.sqlite3"
    backup_restore(backup=backup, into_url=f"sqlite:///{into}", overwrite_source=False, actor=SYSTEM)
    with sqlite3.connect(into) as conn:
        assert {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in SQLITE_ROWS} == SQLITE_ROWS  # noqa: S608
    conn.close()


def test_a_damaged_backup_is_refused_at_the_checksum_before_the_database_is_touched(source, backup_dirs):
    backup = backup_create(target=source.target, actor=SYSTEM)
    path = backup_dirs.backups / backup.file
    path.write_bytes(path.read_bytes()[:-100])
    _delete_some_orders(source)

    with pytest.raises(engines.BackupError, match="^checksum: the file does not match its recorded checksum"):
        backup_restore(backup=backup, into_url=source.url, overwrite_source=True, actor=SYSTEM)

    assert _orders(source) == 400  # untouched
    assert _restore_events() == []


@pytest.mark.service("postgres")
def test_a_restore_that_fails_is_audited_with_the_tools_message(pg_source, backup_dirs):
    import hashlib

    backup = backup_create(target=pg_source.target, actor=SYSTEM)
    data = b"PGDMP but not really" * 10
    (backup_dirs.backups / backup.file).write_bytes(data)
    Backup.objects.filter(pk=backup.pk).update(sha256=hashlib.sha256(data).hexdigest(), size_bytes=len(data))
    backup.refresh_from_db()
    into = pg_source.server.create("bk_dst")

    with pytest.raises(engines.BackupError, match="pg_restore failed"):
        backup_restore(backup=backup, into_url=pg_url(into), overwrite_source=False, actor=SYSTEM)

    assert _restore_events() == ["backup.restore_started", "backup.restore_failed"]
    assert "pg_restore" in AuditEvent.objects.get(action="backup.restore_failed").after["error"]


def test_a_failed_backup_or_another_engine_is_not_restored(sqlite_source, tmp_path):
    failed = Backup.objects.create(target=sqlite_source.target, engine="sqlite", status=BackupStatus.FAILED)
    with pytest.raises(engines.BackupError, match="is failed: nothing to restore"):
        backup_restore(backup=failed, into_url=f"sqlite:///{tmp_path}/x.sqlite3", overwrite_source=False, actor=SYSTEM)

    backup = backup_create(target=sqlite_source.target, actor=SYSTEM)
    with pytest.raises(engines.BackupError, match="unsupported database engine"):
        backup_restore(backup=backup, into_url="redis://h/0", overwrite_source=False, actor=SYSTEM)
    assert _restore_events() == []
    with pytest.raises(engines.BackupError, match="a sqlite backup cannot be restored into PostgreSQL database 'shop'"):
        backup_restore(
            backup=backup, into_url="postgres://u:s3cret-pw@127.0.0.1:1/shop", overwrite_source=False, actor=SYSTEM
        )
    assert _restore_events() == []  # refused before anything was started
