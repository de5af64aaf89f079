"""Encryption at rest with age: dumps stored as ciphertext only, verified and restored by decrypting as a stream,
checksums of both sides recorded and checked; bad keys give a clear error and leave nothing behind."""

from __future__ import annotations

import hashlib
import sqlite3

import psycopg
import pytest
from pyrage import x25519

from backups.models import BackupStatus, VerificationResult
from backups.services import backup_create, backup_restore, backup_verify
from tests.backups.conftest import PG_ROWS, SQLITE_ROWS, SYSTEM, pg_url

pytestmark = pytest.mark.django_db
AGE_HEADER = b"age-encryption.org/v1\n"


@pytest.fixture
def age(settings, tmp_path):
    """A key pair: backups encrypted to its public key, its identity in BACKUP_AGE_IDENTITY_FILE."""
    identity = x25519.Identity.generate()
    path = tmp_path / "keys" / "backup-identity.txt"
    path.parent.mkdir()
    path.write_text(f"# created: by the test\n{identity}\n")
    settings.BACKUP_AGE_RECIPIENTS = [str(identity.to_public())]
    settings.BACKUP_AGE_IDENTITY_FILE = str(path)
    return identity


def _plaintext_signature(source) -> bytes:
    return b"PGDMP" if hasattr(source, "server") else b"SQLite format 3\x00"


def test_an_encrypted_backup_stores_only_ciphertext_and_records_both_checksums(source, age, backup_dirs):
    backup = backup_create(target=source.target, actor=SYSTEM)

    assert backup.status == BackupStatus.SUCCEEDED, backup.error
    assert backup.encrypted and backup.file.endswith(".age")
    stored = (backup_dirs.backups / backup.file).read_bytes()
    assert stored.startswith(AGE_HEADER)
    assert _plaintext_signature(source) not in stored
    # What is stored is checked without the key; the plaintext's checksum is kept for verification.
    assert (backup.sha256, backup.size_bytes) == (hashlib.sha256(stored).hexdigest(), len(stored))
    assert len(backup.plaintext_sha256) == 64 and backup.plaintext_sha256 != backup.sha256
    assert backup.plaintext_size_bytes and backup.plaintext_size_bytes < backup.size_bytes
    # Nothing else was written: no plaintext dump in the partial folder.
    assert backup_dirs.files() == [backup.file]


def test_an_encrypted_backup_verifies_by_decrypting_into_the_restore(source, age, backup_dirs):
    backup = backup_create(target=source.target, actor=SYSTEM)

    verification = backup_verify(backup=backup, actor=SYSTEM)

    assert verification.status == VerificationResult.PASSED, verification.error
    names = [check["name"] for check in verification.checks]
    assert names == ["checksum", "restore", "plaintext", "row_counts", "schema", "integrity"]
    plaintext = next(check for check in verification.checks if check["name"] == "plaintext")
    assert plaintext["detail"].startswith(f"decrypted {backup.plaintext_size_bytes} bytes")
    assert backup_dirs.files() == [backup.file]  # no decrypted copy left, and the scratch is gone


def test_a_plaintext_that_does_not_match_the_recorded_one_fails_verification(source, age):
    backup = backup_create(target=source.target, actor=SYSTEM)
    backup.plaintext_sha256 = "0" * 64
    backup.save()

    verification = backup_verify(backup=backup, actor=SYSTEM)

    assert verification.status == VerificationResult.FAILED
    assert verification.failed_check == "plaintext"
    assert "does not match the plaintext recorded at backup time" in verification.error
    assert verification.scratch_dropped


@pytest.mark.parametrize("problem", ["unset", "missing-file", "other-key", "not-a-key"], ids=lambda p: p)
def test_verification_without_the_right_identity_fails_clearly(sqlite_source, age, settings, tmp_path, problem):
    backup = backup_create(target=sqlite_source.target, actor=SYSTEM)
    other = tmp_path / "other.txt"
    if problem == "unset":
        settings.BACKUP_AGE_IDENTITY_FILE = ""
    elif problem == "missing-file":
        settings.BACKUP_AGE_IDENTITY_FILE = str(tmp_path / "nowhere.txt")
    elif problem == "other-key":
        other.write_text(f"{x25519.Identity.generate()}\n")
        settings.BACKUP_AGE_IDENTITY_FILE = str(other)
    else:
        other.write_text("AGE-SECRET-KEY-1NOTAKEY\n")
        settings.BACKUP_AGE_IDENTITY_FILE = str(other)

    verification = backup_verify(backup=backup, actor=SYSTEM)

    assert verification.status == VerificationResult.FAILED
    expected = {
        "unset": ("setup", "set BACKUP_AGE_IDENTITY_FILE"),
        "missing-file": ("setup", "cannot read the identity file"),
        "other-key": ("restore", "decrypting the backup failed"),
        "not-a-key": ("setup", "line 1 is not an age identity"),
    }[problem]
    assert (verification.failed_check, expected[1] in verification.error) == (expected[0], True), verification.error
    assert "NOTAKEY" not in verification.error  # the file's content is never repeated
    assert verification.scratch_dropped


@pytest.mark.parametrize(
    "recipients",
    [["age1notakey"], ["not-a-key-at-all"], ["SECRET"]],
    ids=["bad-bech32", "not-age", "secret-key"],
)
def test_a_bad_recipient_fails_the_backup_and_writes_nothing(source, settings, backup_dirs, recipients):
    secret = str(x25519.Identity.generate())
    settings.BACKUP_AGE_RECIPIENTS = [secret if value == "SECRET" else value for value in recipients]

    backup = backup_create(target=source.target, actor=SYSTEM)

    assert backup.status == BackupStatus.FAILED
    assert backup.error.startswith("BACKUP_AGE_RECIPIENTS: item 1")
    assert secret not in backup.error
    assert backup_dirs.files() == []


def test_an_encrypted_postgresql_backup_restores_into_another_database(pg_source, age):
    backup = backup_create(target=pg_source.target, actor=SYSTEM)
    into = pg_source.server.create("bk_into")

    backup_restore(backup=backup, into_url=pg_url(into), overwrite_source=False, actor=SYSTEM)

    with psycopg.connect(pg_url(into)) as conn:
        restored = {table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] for table in PG_ROWS}  # noqa: S608
    assert restored == PG_ROWS


def test_an_encrypted_sqlite_backup_restores_into_a_new_file(sqlite_source, age, tmp_path):
    backup = backup_create(target=sqlite_source.target, actor=SYSTEM)
    into = tmp_path / "restored" / "app.sqlite3"
    into.parent.mkdir()

    backup_restore(backup=backup, into_url=f"sqlite:///{into}", overwrite_source=False, actor=SYSTEM)

    with sqlite3.connect(into) as conn:
        restored = {table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] for table in SQLITE_ROWS}  # noqa: S608
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal"
    conn.close()
    assert restored == SQLITE_ROWS
    assert list(into.parent.iterdir()) == [into]


def test_restore_without_the_identity_refuses_before_touching_the_target(sqlite_source, age, settings, tmp_path):
    from backups.engines import BackupError

    backup = backup_create(target=sqlite_source.target, actor=SYSTEM)
    settings.BACKUP_AGE_IDENTITY_FILE = ""
    into = tmp_path / "into.sqlite3"

    with pytest.raises(BackupError, match="set BACKUP_AGE_IDENTITY_FILE"):
        backup_restore(backup=backup, into_url=f"sqlite:///{into}", overwrite_source=False, actor=SYSTEM)
    assert not into.exists()
