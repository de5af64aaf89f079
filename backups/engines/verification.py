"""Verification: one local dump restored into a scratch database and checked; the scratch always goes away."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import psycopg
from django.conf import settings

from backups.engines.encryption import AgeIdentity, StoredDump
from backups.engines.errors import BackupError, CheckFailed, ScratchIsSource, ToolMissing, first_line
from backups.engines.files import create_private_file, file_digest, partial_dir
from backups.engines.postgresql import create_database, drop_database, pg_row_counts, pg_tables
from backups.engines.processes import run_tool
from backups.engines.schema import pg_schema, sqlite_schema
from backups.engines.sources import Database, Identity, file_identity, identity, identity_on_server
from backups.engines.sqlite import sqlite_row_counts
from backups.engines.tools import pg_tool

logger = logging.getLogger(__name__)


def _ms(start: float) -> int:
    return int((time.perf_counter() - start) * 1000)


@dataclass
class CheckResult:
    name: str
    status: str  # "pass", "fail" or "skip"
    detail: str
    ms: int

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "detail": self.detail, "ms": self.ms}


@dataclass
class VerifyOutcome:
    checks: list[CheckResult] = field(default_factory=list)
    restore_ms: int | None = None
    scratch_dropped: bool = False

    @property
    def failed(self) -> CheckResult | None:
        return next((check for check in self.checks if check.status == "fail"), None)


class Verifier:
    """Restores one local dump into a scratch database and checks it; the scratch always goes away.

    ``on_scratch(name)`` is called before the scratch is created, so that a caller can record it and a
    janitor can drop it should this process die half-way. The scratch is refused, before anything is
    written, when it is the source or ``control_plane`` (the control plane's own database) by identity.
    """

    def __init__(
        self,
        *,
        engine: str,
        source: Database,
        scratch_server: Database | None,
        manifest: dict[str, Any],
        label: str,
        timeout: float,
        on_scratch: Callable[[str], None] = lambda name: None,
        control_plane: Database | None = None,
    ) -> None:
        self.engine = engine
        self.source = source
        self.control_plane = control_plane
        self.scratch_server = scratch_server
        self.manifest = manifest
        self.label = label
        self.timeout = timeout
        self.on_scratch = on_scratch
        self.outcome = VerifyOutcome()

    def run(
        self,
        local: Path,
        *,
        expected_sha256: str,
        expected_size: int,
        identities: Sequence[AgeIdentity] | None = None,
        plaintext_sha256: str = "",
        plaintext_size: int | None = None,
    ) -> VerifyOutcome:
        """Check the stored file's checksum, restore it into a scratch database and check that.

        An encrypted dump (``identities`` given) is decrypted as a stream straight into the restore, its
        plaintext hashed on the way and checked against ``plaintext_sha256`` (the "plaintext" check).
        """
        dump = StoredDump(local, identities, plaintext_sha256, plaintext_size)
        try:
            self._check("checksum", lambda: _checksum(local, expected_sha256, expected_size))
            if self.engine == "postgresql":
                self._verify_postgresql(dump)
            else:
                self._verify_sqlite(dump)
        except CheckFailed:
            pass  # recorded in self.outcome
        return self.outcome

    def _check(self, name: str, fn: Callable[[], str | tuple[str, str]]) -> None:
        start = time.perf_counter()
        try:
            result = fn()
        except BackupError as exc:
            self.outcome.checks.append(CheckResult(name, "fail", str(exc), _ms(start)))
            raise CheckFailed(name, str(exc)) from None
        status, detail = result if isinstance(result, tuple) else ("pass", result)
        self.outcome.checks.append(CheckResult(name, status, detail, _ms(start)))
        if status == "fail":
            raise CheckFailed(name, detail)

    # PostgreSQL ----------------------------------------------------------------------------------

    def _scratch_database(self) -> tuple[Database, Database]:
        server = self.scratch_server or self.source.with_name("postgres")
        if server.engine != "postgresql":
            raise BackupError("BACKUP_SCRATCH_DATABASE_URL must name a PostgreSQL server for PostgreSQL backups")
        name = scratch_name(self.label)
        scratch = server.with_name(name)
        if scratch.same_database(self.source) or not name.startswith("verify_"):
            raise ScratchIsSource(f"refusing to verify: the scratch database would be the source ({self.source.label})")
        return server, scratch

    def _refuse_protected(self, scratch_identity: Callable[[], Identity | None]) -> None:
        """Refuse a scratch that is the source or the control plane's database, however their URLs differ.

        A database that cannot be identified (it does not answer) is refused too: the scratch is
        overwritten, so "probably not the source" is not enough.
        """
        try:
            scratch = scratch_identity()
            if scratch is None:
                return  # a SQLite file that does not exist is no other file
            protected = [(self.source, "the source"), (self.control_plane, "the control plane's own database")]
            for database, role in protected:
                if database is not None and identity(database) == scratch:
                    message = f"the scratch database would be {role} ({database.label})"
                    raise ScratchIsSource(f"refusing to verify: {message}")
        except ScratchIsSource:
            raise
        except BackupError as exc:
            raise ScratchIsSource(
                f"refusing to verify: cannot make sure the scratch database is neither the source "
                f"nor the control plane's own database: {exc}"
            ) from None

    def _verify_postgresql(self, dump: StoredDump) -> None:
        server, scratch = self._scratch_database()
        # The scratch does not exist yet: its identity is the server it will be created on plus its name.
        self._refuse_protected(lambda: identity_on_server(server, scratch.name))
        self.on_scratch(scratch.name)
        created = False
        try:
            start = time.perf_counter()

            plaintext: list[tuple[str, int]] = []

            def restore() -> str:
                nonlocal created
                create_database(server, scratch.name)
                created = True

                def decrypted(stdin: IO[bytes]) -> None:
                    plaintext.append(dump.feed(stdin))

                if dump.encrypted:
                    # Decrypted into pg_restore's standard input: no plaintext file, and so one job (a
                    # parallel restore needs a file it can seek in).
                    source: list[str] = []
                    feed: Callable[[IO[bytes]], object] | None = decrypted
                else:
                    # A custom-format file restores in parallel.
                    source, feed = [f"--jobs={settings.BACKUP_RESTORE_JOBS}", str(dump.path)], None
                run_tool(
                    [
                        pg_tool("pg_restore"),
                        "--no-owner",
                        "--no-privileges",
                        "--exit-on-error",
                        *scratch.pg_args(),
                        *source,
                    ],
                    env=scratch.pg_env(),
                    timeout=self.timeout,
                    feed=feed,
                )
                self.outcome.restore_ms = _ms(start)
                return f"restored into {scratch.name} in {self.outcome.restore_ms} ms"

            self._check("restore", restore)
            if dump.encrypted:
                self._check("plaintext", lambda: dump.check(plaintext[0]))
            self._check("row_counts", lambda: self._pg_rows(scratch))
            self._check("schema", lambda: pg_schema(dump, scratch, timeout=self.timeout))
            self._check("integrity", lambda: _pg_amcheck(scratch, timeout=self.timeout))
        finally:
            self.outcome.scratch_dropped = True
            if created:
                try:
                    drop_database(server, scratch.name)
                except (BackupError, psycopg.Error) as exc:
                    # The failed check stays the verification's error; run_due drops the scratch later.
                    logger.error("could not drop the scratch database %s: %s", scratch.name, first_line(exc))
                    self.outcome.scratch_dropped = False

    def _pg_rows(self, scratch: Database) -> tuple[str, str]:
        expected: dict[str, int] = self.manifest.get("tables", {})
        with scratch.connect(autocommit=True) as conn:
            restored = pg_row_counts(conn, pg_tables(conn))
        return _compare_counts(expected, restored)

    # SQLite --------------------------------------------------------------------------------------

    def _verify_sqlite(self, dump: StoredDump) -> None:
        scratch = partial_dir() / f"{scratch_name(self.label)}.sqlite3"
        if os.path.realpath(scratch) == os.path.realpath(self.source.name):
            raise ScratchIsSource(f"refusing to verify: the scratch database would be the source ({self.source.label})")
        self._refuse_protected(lambda: file_identity(scratch))
        try:
            # Exclusive: a file already there (a hard link or symlink planted under the next name) is
            # never written through, and so never removed by the clean-up below either.
            create_private_file(scratch)
        except OSError as exc:
            raise ScratchIsSource(
                f"refusing to verify: the scratch file {scratch.name} exists already ({exc.strerror or exc})"
            ) from None
        self.on_scratch(scratch.name)
        try:
            start = time.perf_counter()

            plaintext: list[tuple[str, int]] = []

            def restore() -> str:
                try:
                    # An encrypted dump is decrypted straight into the scratch file, the restore itself.
                    with open(scratch, "r+b") as dst:
                        plaintext.append(dump.feed(dst))
                    conn = sqlite3.connect(scratch)
                    conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
                    conn.close()
                except (OSError, sqlite3.Error) as exc:
                    raise BackupError(f"the dump does not open as a SQLite database: {exc}") from None
                self.outcome.restore_ms = _ms(start)
                return f"restored into {scratch.name} in {self.outcome.restore_ms} ms"

            self._check("restore", restore)
            if dump.encrypted:
                self._check("plaintext", lambda: dump.check(plaintext[0]))
            conn = sqlite3.connect(scratch)
            try:
                self._check(
                    "row_counts", lambda: _compare_counts(self.manifest.get("tables", {}), sqlite_row_counts(conn))
                )
                self._check("schema", lambda: sqlite_schema(conn, self.manifest.get("schema_sha256", "")))
                self._check("integrity", lambda: _sqlite_integrity(conn))
            finally:
                conn.close()
        finally:
            for suffix in ("", "-journal", "-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(f"{scratch}{suffix}")
            self.outcome.scratch_dropped = True


def scratch_name(label: str) -> str:
    """``verify_<label>_<random>``: a name no source database has; at most 63 bytes (PostgreSQL's limit)."""
    clean = re.sub(r"[^a-z0-9_]", "_", label.lower())[:40]
    return f"verify_{clean}_{secrets.token_hex(4)}"


def _checksum(local: Path, expected_sha256: str, expected_size: int) -> str:
    digest, size = file_digest(local)
    if size != expected_size or digest != expected_sha256:
        raise BackupError(
            f"the file does not match its recorded checksum (altered or truncated): "
            f"{size} bytes, sha256 {digest[:16]}…; recorded {expected_size} bytes, sha256 {expected_sha256[:16]}…"
        )
    return f"sha256 {digest[:16]}… over {size} bytes matches"


def _compare_counts(expected: dict[str, int], restored: dict[str, int]) -> tuple[str, str]:
    problems = []
    for table, rows in sorted(expected.items()):
        if table not in restored:
            problems.append(f"{table} missing")
        elif restored[table] != rows:
            problems.append(f"{table}: {rows} rows in the manifest, {restored[table]} restored")
    if problems:
        return "fail", "; ".join(problems[:10]) + (f" (and {len(problems) - 10} more)" if len(problems) > 10 else "")
    return "pass", f"{len(expected)} tables, {sum(expected.values())} rows, as in the manifest"


def _pg_amcheck(scratch: Database, *, timeout: float) -> tuple[str, str]:
    try:
        tool = pg_tool("pg_amcheck")
    except ToolMissing as exc:
        return "skip", str(exc)
    with scratch.connect(autocommit=True) as conn:
        available = conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'amcheck'").fetchone()
    if not available:
        return "skip", "the server has no amcheck extension"
    try:
        run_tool(
            [tool, "--install-missing", f"--jobs={settings.BACKUP_RESTORE_JOBS}", *scratch.pg_args(positional=True)],
            env=scratch.pg_env(),
            timeout=timeout,
        )
    except BackupError as exc:
        return "fail", str(exc)
    return "pass", "pg_amcheck found no corruption in tables and B-tree indexes"


# The same integrity check for a database restored some other way (a point-in-time restore).
pg_amcheck_check = _pg_amcheck


def _sqlite_integrity(conn: sqlite3.Connection) -> tuple[str, str]:
    try:
        rows = [row[0] for row in conn.execute("PRAGMA integrity_check")]
    except sqlite3.Error as exc:
        return "fail", f"PRAGMA integrity_check: {exc}"
    if rows != ["ok"]:
        return "fail", "PRAGMA integrity_check: " + "; ".join(rows[:5])
    return "pass", "PRAGMA integrity_check: ok"
