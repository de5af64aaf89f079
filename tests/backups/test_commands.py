"""manage.py backup, verify_backup and restore_backup, as an operator types them."""

from __future__ import annotations

import sqlite3
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from backups.models import Backup, BackupStatus, BackupTarget, VerificationResult
from backups.services import storage, target_create
from controlplane.audit import Actor
from controlplane.models import AuditEvent

pytestmark = [pytest.mark.django_db]


def run(*args):
    out, err = StringIO(), StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


@pytest.fixture
def shop(tmp_path, monkeypatch):
    """A SQLite source named through SHOP_DATABASE_URL."""
    path = tmp_path / "shop.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE coaches (id INTEGER PRIMARY KEY, name TEXT NOT NULL)")
        conn.executemany("INSERT INTO coaches (name) VALUES (?)", [(f"coach {i}",) for i in range(50)])
    monkeypatch.setenv("SHOP_DATABASE_URL", f"sqlite:///{path}")
    target = target_create(data={"name": "shop", "url_env": "SHOP_DATABASE_URL"}, actor=Actor.system("tests"))
    return target, path


def test_backup_then_verify_latest(shop):
    out, _ = run("backup", "shop")
    backup = Backup.objects.get(target__name="shop")
    assert backup.status == BackupStatus.SUCCEEDED
    assert f"shop: backup #{backup.pk}" in out and backup.sha256 in out
    assert backup.manifest["tables"] == {"coaches": 50}

    out, _ = run("verify_backup", "--latest", "shop")
    assert f"backup #{backup.pk} of shop verified" in out
    assert "pass  integrity" in out and "pass  checksum" in out
    backup.refresh_from_db()
    assert backup.verification == VerificationResult.PASSED


def test_verify_backup_fails_naming_the_check(shop):
    run("backup", "shop")
    backup = Backup.objects.get(target__name="shop")
    with open(storage().path(backup.file), "r+b") as handle:
        handle.truncate(backup.size_bytes // 2)
    with pytest.raises(CommandError, match=r"failed verification at checksum: .*altered or truncated"):
        run("verify_backup", str(backup.pk))
    assert AuditEvent.objects.filter(action="backup.verify_failed", object_id=str(backup.pk)).exists()


def test_bad_arguments_get_clear_errors_and_change_nothing(shop):
    with pytest.raises(CommandError, match=r"no backup target named 'nope' \(targets: .*shop"):
        run("backup", "nope")
    with pytest.raises(CommandError, match="no backup #999"):
        run("verify_backup", "999")
    with pytest.raises(CommandError, match="has no finished backup"):
        run("verify_backup", "--latest", "shop")
    with pytest.raises(CommandError, match="no backup #999"):
        run("restore_backup", "999", "--into", "sqlite:////tmp/nowhere.sqlite3")
    assert not Backup.objects.exists()


def test_a_failed_backup_exits_non_zero(shop, monkeypatch):
    monkeypatch.delenv("SHOP_DATABASE_URL")
    with pytest.raises(CommandError, match="backup failed for shop"):
        run("backup", "shop")
    assert Backup.objects.get(target__name="shop").error.startswith("environment variable SHOP_DATABASE_URL is not set")


def test_restore_refuses_the_source_unless_told_and_restores_elsewhere(shop, tmp_path):
    target, source = shop
    run("backup", "shop")
    backup = Backup.objects.get(target=target)
    with sqlite3.connect(source) as conn:
        conn.execute("DELETE FROM coaches WHERE id > 10")

    with pytest.raises(CommandError, match="refusing to restore into the backed-up database itself"):
        run("restore_backup", str(backup.pk), "--into", f"sqlite:///{source}")
    copy = tmp_path / "copy.sqlite3"
    out, _ = run("restore_backup", str(backup.pk), "--into", f"sqlite:///{copy}")
    assert f"backup #{backup.pk} of shop restored" in out
    with sqlite3.connect(copy) as conn:
        assert conn.execute("SELECT count(*) FROM coaches").fetchone()[0] == 50

    run("restore_backup", str(backup.pk), "--into", f"sqlite:///{source}", "--i-know-this-overwrites")
    with sqlite3.connect(source) as conn:
        assert conn.execute("SELECT count(*) FROM coaches").fetchone()[0] == 50
    events = list(AuditEvent.objects.filter(object_id=str(backup.pk)).values_list("action", flat=True))
    assert events.count("backup.restore") == 2 and events.count("backup.restore_started") == 2
    assert BackupTarget.objects.filter(name="shop").exists()
