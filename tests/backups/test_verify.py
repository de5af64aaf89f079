"""Verifying a backup: checksum, restore into a verify_* scratch database, rows, schema, integrity;
the scratch always dropped; the scratch never the source."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from backups import engines
from backups.engines import schema
from backups.engines import verification as verifying
from backups.models import Backup, BackupStatus, BackupTarget, Verification, VerificationResult
from backups.services import backup_create, backup_verify
from controlplane.models import AuditEvent
from tests.backups.conftest import PG_ROWS, PG_SCHEMA, SPELLINGS, SYSTEM, pg_admin, pg_url, spell

pytestmark = pytest.mark.django_db
ALL_CHECKS = ["checksum", "restore", "row_counts", "schema", "integrity"]


def _checks(verification: Verification) -> list[tuple[str, str]]:
    return [(check["name"], check["status"]) for check in verification.checks]


def _scratch_left(source, backup_dirs) -> list[str]:
    """Scratch databases of this test still there: PostgreSQL databases, or SQLite files."""
    if hasattr(source, "server"):
        return source.server.scratch_left()
    return [name for name in backup_dirs.files() if "verify_" in name]


def _rewrite(backup: Backup, backup_dirs, data: bytes) -> None:
    """Replace the stored file and record its new checksum: the dump then passes the checksum check."""
    (backup_dirs.backups / backup.file).write_bytes(data)
    backup.sha256, backup.size_bytes = hashlib.sha256(data).hexdigest(), len(data)
    backup.save()


def test_a_backup_passes_every_check_and_leaves_no_scratch(source, backup_dirs):
    backup = backup_create(target=source.target, actor=SYSTEM)

    verification = backup_verify(backup=backup, actor=SYSTEM)

    assert _checks(verification) == [(name, "pass") for name in ALL_CHECKS]
    assert verification.status == VerificationResult.PASSED
    assert (verification.failed_check, verification.error) == ("", "")
    assert verification.scratch.startswith("verify_") and verification.scratch_dropped
    assert verification.restore_ms is not None and verification.duration_ms is not None
    assert all(check["detail"] for check in verification.checks)
    integrity = verification.checks[-1]["detail"]
    assert integrity.startswith("pg_amcheck found no corruption" if hasattr(source, "server") else "PRAGMA")
    assert _scratch_left(source, backup_dirs) == []
    backup.refresh_from_db()
    assert backup.verification == VerificationResult.PASSED and backup.verified_at is not None
    event = AuditEvent.objects.get(action="backup.verify")
    assert event.object_id == str(backup.pk) and event.after["status"] == "passed"


@pytest.mark.service("postgres")
def test_a_separate_scratch_server_is_used_when_configured(pg_source, settings):
    settings.BACKUP_SCRATCH_DATABASE_URL = pg_url("postgres")
    backup = backup_create(target=pg_source.target, actor=SYSTEM)
    verification = backup_verify(backup=backup, actor=SYSTEM)
    assert verification.status == VerificationResult.PASSED, verification.checks
    assert pg_source.server.scratch_left() == []


def test_rows_missing_from_the_restore_fail_the_row_count_check(
    source, backup_dirs, django_capture_on_commit_callbacks
):
    backup = backup_create(target=source.target, actor=SYSTEM)
    table = next(name for name in backup.manifest["tables"] if name.endswith("customers"))
    backup.manifest["tables"][table] = 301  # the manifest says one more than the dump holds
    backup.save()

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        verification = backup_verify(backup=backup, actor=SYSTEM)

    assert verification.status == VerificationResult.FAILED
    assert verification.failed_check == "row_counts"
    assert verification.error == f"{table}: 301 rows in the manifest, 300 restored"
    assert _checks(verification) == [("checksum", "pass"), ("restore", "pass"), ("row_counts", "fail")]
    assert verification.scratch_dropped and _scratch_left(source, backup_dirs) == []
    backup.refresh_from_db()
    assert backup.verification == VerificationResult.FAILED
    event = AuditEvent.objects.get(action="backup.verify_failed")
    assert event.after["failed_check"] == "row_counts"
    assert len(callbacks) == 1  # the alert evaluation, queued once the failure commits


@pytest.mark.service("postgres")
def test_the_postgresql_schema_check_tells_a_reprinted_definition_from_a_different_one(pg_source, backup_dirs):
    """PostgreSQL prints a partial index's ``IN (...)`` with other casts once restored: still the same
    schema. A database whose index covers other rows is not."""
    backup = backup_create(target=pg_source.target, actor=SYSTEM)
    dump = backup_dirs.backups / backup.file
    restored = engines.from_url(pg_url(pg_source.server.create("bk_restored")), variable="restored")
    engines.restore(dump, "postgresql", restored, timeout=60)
    other_schema = PG_SCHEMA.replace(
        "WHERE status IN ('queued', 'running')", "WHERE status IN ('queued', 'running', 'paused')"
    )
    other = engines.from_url(pg_url(pg_source.server.create("bk_other", other_schema)), variable="other")

    assert schema.pg_schema(dump, restored, timeout=60)[0] == "pass"
    status, detail = schema.pg_schema(dump, other, timeout=60)

    assert status == "fail" and detail.startswith("schema differs from the dump's: -CREATE UNIQUE INDEX jobs_one")
    assert "'paused'" in detail


def test_a_sqlite_schema_unlike_the_recorded_one_fails_the_schema_check(sqlite_source):
    backup = backup_create(target=sqlite_source.target, actor=SYSTEM)
    backup.manifest["schema_sha256"] = "0" * 64
    backup.save()
    verification = backup_verify(backup=backup, actor=SYSTEM)
    assert verification.failed_check == "schema"
    assert verification.error == "schema differs from the one recorded at backup time"


def test_a_sqlite_dump_with_a_broken_index_fails_the_integrity_check(sqlite_source, backup_dirs):
    backup = backup_create(target=sqlite_source.target, actor=SYSTEM)
    data = (backup_dirs.backups / backup.file).read_bytes()
    # The table's copy of a row (email then name), not the unique index's: the index no longer matches.
    row = b"c150@x.testC 150"
    assert data.count(row) == 1
    _rewrite(backup, backup_dirs, data.replace(row, b"c150@x.tesZC 150"))

    verification = backup_verify(backup=backup, actor=SYSTEM)

    assert _checks(verification) == [(name, "pass") for name in ALL_CHECKS[:4]] + [("integrity", "fail")]
    assert verification.error.startswith("PRAGMA integrity_check: ")
    assert "sqlite_autoindex_customers_1" in verification.error
    assert _scratch_left(sqlite_source, backup_dirs) == []


def test_a_backup_whose_file_is_gone_fails_verification_saying_so(source, backup_dirs):
    backup = backup_create(target=source.target, actor=SYSTEM)
    (backup_dirs.backups / backup.file).unlink()
    verification = backup_verify(backup=backup, actor=SYSTEM)
    assert verification.failed_check == "setup"
    assert verification.error == f"the backup file {backup.file} is missing from the backups storage"


def test_only_a_finished_backup_is_verified(sqlite_source):
    failed = Backup.objects.create(target=sqlite_source.target, engine="sqlite", status=BackupStatus.FAILED)
    with pytest.raises(engines.BackupError, match="is failed: only a finished backup can be verified"):
        backup_verify(backup=failed, actor=SYSTEM)
    assert not Verification.objects.exists()


# --- The scratch is never the source ------------------------------------------------------------


@pytest.mark.service("postgres")
def test_a_scratch_name_that_would_be_the_source_is_refused_and_the_source_kept(pg_source, monkeypatch):
    backup = backup_create(target=pg_source.target, actor=SYSTEM)
    # The source is renamed to the name the next scratch would get; only the guard stands between.
    monkeypatch.setattr(verifying, "scratch_name", lambda label: "verify_" + pg_source.name)
    pg_source.server.created.append("verify_" + pg_source.name)
    with engines.from_url(pg_url("postgres"), variable="admin").connect(autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{pg_source.name}" RENAME TO "verify_{pg_source.name}"')
    monkeypatch.setenv(pg_source.env, pg_url("verify_" + pg_source.name))

    verification = backup_verify(backup=backup, actor=SYSTEM)

    assert verification.status == VerificationResult.FAILED and verification.failed_check == "setup"
    assert verification.error.startswith("refusing to verify: the scratch database would be the source")
    with engines.from_url(pg_url("verify_" + pg_source.name), variable="x").connect() as conn:
        assert conn.execute("SELECT count(*) FROM orders").fetchone() == (1000,)


def test_a_sqlite_scratch_file_that_would_be_the_source_is_refused_and_the_source_kept(
    sqlite_source, settings, monkeypatch
):
    backup = backup_create(target=sqlite_source.target, actor=SYSTEM)
    settings.BACKUP_TMP_DIR = sqlite_source.path.parent  # scratch files go beside the source
    monkeypatch.setattr(verifying, "scratch_name", lambda label: sqlite_source.path.stem)

    verification = backup_verify(backup=backup, actor=SYSTEM)

    assert verification.failed_check == "setup"
    assert verification.error.startswith("refusing to verify: the scratch database would be the source")
    assert sqlite_source.path.exists() and sqlite_source.rows()["orders"] == 1000


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _assert_refused_before_any_scratch(verification: Verification, message: str) -> None:
    """Failed at setup with ``message``; no scratch recorded, so no clean-up can ever drop what was refused."""
    assert verification.status == VerificationResult.FAILED and verification.failed_check == "setup"
    assert verification.error.startswith(message), verification.error
    assert verification.scratch == "" and verification.scratch_dropped
    assert AuditEvent.objects.get(action="backup.verify_failed").after["error"] == verification.error


@pytest.mark.parametrize("link", ["hard link", "symlink", "symlink to a hard link"])
def test_a_scratch_path_planted_as_a_link_to_the_sqlite_source_is_refused_and_the_source_unchanged(
    sqlite_source, backup_dirs, monkeypatch, link
):
    """Someone who can guess the next scratch name puts the source there: the restore would write through it."""
    backup = backup_create(target=sqlite_source.target, actor=SYSTEM)
    before = _sha256(sqlite_source.path)
    planted = backup_dirs.partial / "verify_planted.sqlite3"
    monkeypatch.setattr(verifying, "scratch_name", lambda label: planted.stem)
    if link == "hard link":
        os.link(sqlite_source.path, planted)
    elif link == "symlink":
        planted.symlink_to(sqlite_source.path)
    else:  # no path of the source in sight: only the inode tells
        os.link(sqlite_source.path, sqlite_source.path.with_name("other-name"))
        planted.symlink_to(sqlite_source.path.with_name("other-name"))

    verification = backup_verify(backup=backup, actor=SYSTEM)

    _assert_refused_before_any_scratch(verification, "refusing to verify: the scratch database would be the source")
    assert _sha256(sqlite_source.path) == before
    assert sqlite_source.rows()["orders"] == 1000
    assert os.path.lexists(planted)  # not ours: left where it was


def test_a_scratch_path_planted_as_a_link_to_another_file_is_neither_written_nor_removed(
    sqlite_source, backup_dirs, tmp_path, monkeypatch
):
    backup = backup_create(target=sqlite_source.target, actor=SYSTEM)
    other = tmp_path / "someone-elses.sqlite3"
    other.write_bytes(b"not a scratch")
    planted = backup_dirs.partial / "verify_planted.sqlite3"
    planted.symlink_to(other)
    monkeypatch.setattr(verifying, "scratch_name", lambda label: planted.stem)

    verification = backup_verify(backup=backup, actor=SYSTEM)

    _assert_refused_before_any_scratch(
        verification, "refusing to verify: the scratch file verify_planted.sqlite3 exists already"
    )
    assert other.read_bytes() == b"not a scratch" and planted.is_symlink()


def test_a_scratch_that_would_be_the_control_planes_own_sqlite_database_is_refused(
    sqlite_source, backup_dirs, settings, monkeypatch
):
    own = settings.DATABASES["default"]
    if own["ENGINE"] != engines.SQLITE_ENGINE:
        pytest.skip("the control plane runs on PostgreSQL here: see the PostgreSQL case")
    backup = backup_create(target=sqlite_source.target, actor=SYSTEM)
    planted = backup_dirs.partial / "verify_planted.sqlite3"
    planted.symlink_to(own["NAME"])
    monkeypatch.setattr(verifying, "scratch_name", lambda label: planted.stem)

    verification = backup_verify(backup=backup, actor=SYSTEM)

    _assert_refused_before_any_scratch(
        verification, "refusing to verify: the scratch database would be the control plane's own database"
    )
    assert BackupTarget.objects.filter(pk=sqlite_source.target.pk).exists()  # still the control plane's rows


@pytest.mark.service("postgres")
@pytest.mark.parametrize("spelling", SPELLINGS)
def test_a_scratch_that_is_the_postgresql_source_under_another_url_is_refused_and_the_source_kept(
    pg_source, pg_other_user, settings, monkeypatch, spelling
):
    """The source's URL and the scratch server's URL differ as strings; the server says they are one."""
    backup = backup_create(target=pg_source.target, actor=SYSTEM)
    renamed = "verify_" + pg_source.name  # the name the next scratch gets
    pg_source.server.created.append(renamed)
    with pg_admin() as conn:
        conn.execute(f'ALTER DATABASE "{pg_source.name}" RENAME TO "{renamed}"')
    monkeypatch.setattr(verifying, "scratch_name", lambda label: renamed)
    settings.BACKUP_SCRATCH_DATABASE_URL = pg_url("postgres")
    user, password = pg_other_user
    monkeypatch.setenv(pg_source.env, spell(pg_url(renamed), spelling, user=user, password=password))

    verification = backup_verify(backup=backup, actor=SYSTEM)

    _assert_refused_before_any_scratch(verification, "refusing to verify: the scratch database would be the source")
    with engines.from_url(pg_url(renamed), variable="source").connect() as conn:
        assert engines.pg_row_counts(conn, engines.pg_tables(conn)) == PG_ROWS


@pytest.mark.service("postgres")
def test_a_scratch_that_would_be_the_control_planes_postgresql_database_is_refused(pg_source, backup_dirs, monkeypatch):
    """As the service passes it: the control plane's database, here one named like the next scratch."""
    backup = backup_create(target=pg_source.target, actor=SYSTEM)
    own = pg_source.server.create("verify_own", "CREATE TABLE kept (x int); INSERT INTO kept VALUES (1), (2)")
    monkeypatch.setattr(verifying, "scratch_name", lambda label: own)
    verifier = engines.Verifier(
        engine="postgresql",
        source=engines.from_url(pg_source.url, variable="source"),
        scratch_server=None,
        manifest=backup.manifest,
        label="own",
        timeout=60,
        control_plane=engines.from_url(spell(pg_url(own), "query-parameter"), variable="DATABASE_URL"),
    )

    with pytest.raises(engines.ScratchIsSource, match="the scratch database would be the control plane's own database"):
        verifier.run(backup_dirs.backups / backup.file, expected_sha256=backup.sha256, expected_size=backup.size_bytes)

    with engines.from_url(pg_url(own), variable="own").connect() as conn:
        assert conn.execute("SELECT count(*) FROM kept").fetchone() == (2,)


def test_a_scratch_whose_server_does_not_answer_is_refused_before_anything_is_created(tmp_path):
    source = engines.Database("postgresql", "app", "127.0.0.1", 1, "u", "secret")
    verifier = engines.Verifier(
        engine="postgresql", source=source, scratch_server=None, manifest={}, label="x", timeout=10
    )
    refusal = "^refusing to verify: cannot make sure the scratch database"
    with pytest.raises(engines.ScratchIsSource, match=refusal) as refused:
        verifier._verify_postgresql(tmp_path / "unused.pgdump")
    assert "127.0.0.1:1" in str(refused.value) and "secret" not in str(refused.value)
    assert verifier.outcome.checks == []  # no restore was tried


def test_the_scratch_database_is_named_verify_and_is_never_the_source(tmp_path):
    source = engines.Database("postgresql", "app", "127.0.0.1", 5432, "u", "secret")
    verifier = engines.Verifier(
        engine="postgresql", source=source, scratch_server=None, manifest={}, label="App-1!", timeout=10
    )
    server, scratch = verifier._scratch_database()
    assert server == source.with_name("postgres")
    assert scratch.name.startswith("verify_app_1__") and len(scratch.name) <= 63
    assert not scratch.same_database(source)
    assert len(engines.scratch_name("x" * 200)) <= 63
    sqlite_server = engines.Database("sqlite", str(tmp_path / "x.sqlite3"))
    with pytest.raises(engines.BackupError, match="must name a PostgreSQL server"):
        engines.Verifier(
            engine="postgresql", source=source, scratch_server=sqlite_server, manifest={}, label="a", timeout=10
        )._scratch_database()


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        (("app", "localhost", 5432), ("app", "127.0.0.1", 5432), True),
        (("app", "", 5432), ("app", "::1", 5432), True),
        (("app", "/var/run/postgresql", 5432), ("app", "localhost", 5432), True),
        (("app", "DB.example", 5432), ("app", "db.example", 5432), True),
        (("app", "localhost", 5432), ("app", "localhost", 5433), False),
        (("app", "localhost", 5432), ("verify_app", "localhost", 5432), False),
        (("app", "db1.example", 5432), ("app", "db2.example", 5432), False),
    ],
)
def test_same_database_compares_server_and_name(a, b, same):
    first, second = (engines.Database("postgresql", name, host, port) for name, host, port in (a, b))
    assert first.same_database(second) is same
    assert engines.Database("sqlite", first.name).same_database(first) is False


def test_same_database_sees_one_sqlite_file_through_a_symlink_or_a_hard_link(tmp_path):
    real = tmp_path / "db.sqlite3"
    real.touch()
    (tmp_path / "link.sqlite3").symlink_to(real)
    os.link(real, tmp_path / "hard.sqlite3")
    (tmp_path / "other.sqlite3").touch()
    first = engines.Database("sqlite", str(real))
    for path, same in [("link.sqlite3", True), ("hard.sqlite3", True), ("other.sqlite3", False)]:
        assert first.same_database(engines.Database("sqlite", str(tmp_path / path))) is same, path
        assert (engines.identity(first) == engines.identity(engines.Database("sqlite", str(tmp_path / path)))) is same
    assert engines.identity(engines.Database("sqlite", str(tmp_path / "not-yet.sqlite3"))) is None


@pytest.mark.service("postgres")
def test_drop_database_refuses_anything_but_a_scratch(pg_source):
    server = engines.from_url(pg_url("postgres"), variable="admin")
    with pytest.raises(engines.ScratchIsSource, match=f"refusing to drop '{pg_source.name}': not a scratch"):
        engines.drop_database(server, pg_source.name)
    assert pg_source.rows()["public.orders"] == 1000
    scratch = f"verify_{pg_source.server.label}_manual"
    engines.create_database(server, scratch)
    engines.drop_database(server, scratch)
    assert pg_source.server.scratch_left() == []
