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
from typing import IO, Any, Protocol

import psycopg
from django.conf import settings
from psycopg import sql

from backups.engines.encryption import AgeIdentity, StoredDump
from backups.engines.errors import BackupError, CheckFailed, ScratchIsSource, ToolMissing, first_line
from backups.engines.files import OnBytes, create_private_file, file_digest, partial_dir
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
    # A drill's: when (time.perf_counter()) the scratch database answered the last smoke query.
    ready_at: float | None = None

    @property
    def failed(self) -> CheckResult | None:
        return next((check for check in self.checks if check.status == "fail"), None)


class Reporter(Protocol):
    """Where a run says how far it is (``backups.progress.Progress``); each call is cheap."""

    def report(
        self, *, phase: str | None = None, done: int | None = None, total: int | None = None, unit: str | None = None
    ) -> None: ...


class Silent:
    """A ``Reporter`` that tells no one."""

    def report(
        self, *, phase: str | None = None, done: int | None = None, total: int | None = None, unit: str | None = None
    ) -> None:
        pass


class Verifier:
    """Restores one local dump into a scratch database and checks it; the scratch always goes away.

    ``on_scratch(name)`` is called before the scratch is created, so that a caller can record it and a
    janitor can drop it should this process die half-way. The scratch is refused, before anything is
    written, when it is the source or ``control_plane`` (the control plane's own database) by identity.

    With ``smoke_queries`` (a restore drill) the restored scratch is proven working by those queries,
    each run read-only and required to return a row, instead of the verification's row, schema and
    integrity checks (an empty list: the row counts); ``outcome.ready_at`` marks when it answered.
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
        smoke_queries: Sequence[str] | None = None,
        progress: Reporter | None = None,
    ) -> None:
        self.smoke_queries = None if smoke_queries is None else list(smoke_queries)
        self.progress: Reporter = progress or Silent()
        self.engine = engine
        self.source = source
        self.control_plane = control_plane
        self.scratch_server = scratch_server
        self.manifest = manifest
        self.label = label
        self.timeout = timeout
        self.on_scratch = on_scratch
        self.outcome = VerifyOutcome()
        self._deadline = time.monotonic() + timeout

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
        self._deadline = time.monotonic() + self.timeout
        dump = StoredDump(local, identities, plaintext_sha256, plaintext_size)
        try:
            self.progress.report(phase="checksum", done=0, total=expected_size, unit="bytes")
            self._check(
                "checksum",
                lambda: _checksum(local, expected_sha256, expected_size, lambda done: self.progress.report(done=done)),
            )
            if self.engine == "postgresql":
                self._verify_postgresql(dump)
            else:
                self._verify_sqlite(dump)
        except CheckFailed:
            pass  # recorded in self.outcome
        return self.outcome

    def _check(self, name: str, fn: Callable[[], str | tuple[str, str]]) -> None:
        if name != "checksum":
            self.progress.report(phase=name)
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
                tables = len(self.manifest.get("tables", {})) or None
                self.progress.report(done=0, total=tables, unit="tables")
                restored = 0

                def line(text: str) -> None:  # --verbose says when each table's rows start to load
                    nonlocal restored
                    if _TABLE_DATA.match(text):
                        restored += 1
                        self.progress.report(done=restored)

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
                        "--verbose",
                        *scratch.pg_args(),
                        *source,
                    ],
                    env=scratch.pg_env(),
                    timeout=self.timeout,
                    feed=feed,
                    on_line=line,
                    chatter=_RESTORE_CHATTER,
                )
                self.outcome.restore_ms = _ms(start)
                return f"restored into {scratch.name} in {self.outcome.restore_ms} ms"

            self._check("restore", restore)
            if dump.encrypted:
                self._check("plaintext", lambda: dump.check(plaintext[0]))
            if self.smoke_queries is not None:
                self._smoke(
                    lambda query: _pg_smoke(scratch, query, timeout=self._time_left()), lambda: self._pg_rows(scratch)
                )
                return
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

    def _time_left(self) -> float:
        """What is left of the run's timeout: the smoke queries share it, so a drill ends within it."""
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise BackupError(f"the drill did not finish within {self.timeout:g} s")
        return max(left, 0.001)

    def _smoke(self, run: Callable[[str], str], rows: Callable[[], tuple[str, str]]) -> None:
        """A drill's proof of a working database: each smoke query answers (or, with none, the row counts)."""
        queries = self.smoke_queries or []
        if not queries:
            self._check("row_counts", rows)
        for number, query in enumerate(queries, start=1):
            self._check(f"smoke_{number}", lambda query=query: run(query))  # type: ignore[misc]
            self.progress.report(phase="smoke queries", done=number, total=len(queries), unit="queries")
        self.outcome.ready_at = time.perf_counter()

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
            if self.smoke_queries is not None:

                def rows() -> tuple[str, str]:
                    with contextlib.closing(sqlite3.connect(scratch)) as conn:
                        return _compare_counts(self.manifest.get("tables", {}), sqlite_row_counts(conn))

                self._smoke(lambda query: _sqlite_smoke(scratch, query, timeout=self._time_left()), rows)
                return
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


# pg_restore --verbose: a table's rows start to load; and every line of its verbose talk (not an error).
_TABLE_DATA = re.compile(r"pg_restore: processing data for table ")
_RESTORE_CHATTER = re.compile(r"pg_restore: (?!error|warning|detail|hint|\[)")


def scratch_name(label: str) -> str:
    """``verify_<label>_<random>``: a name no source database has; at most 63 bytes (PostgreSQL's limit)."""
    clean = re.sub(r"[^a-z0-9_]", "_", label.lower())[:40]
    return f"verify_{clean}_{secrets.token_hex(4)}"


def _checksum(local: Path, expected_sha256: str, expected_size: int, on_bytes: OnBytes | None = None) -> str:
    digest, size = file_digest(local, on_bytes)
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


def _smoke_answer(query: str, row: Any) -> str:
    if row is None:
        raise BackupError(f"returned no row: {_short(query)}")
    return f"answered {_short(repr(tuple(row)), 60)}: {_short(query)}"


def _short(text: str, limit: int = 120) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _pg_smoke(scratch: Database, query: str, *, timeout: float) -> str:
    """Run one smoke query in a read-only transaction on the scratch database, under a statement timeout;
    it must succeed and return a row. Rolled back whatever it did."""
    with scratch.connect(autocommit=True) as conn:
        conn.execute("BEGIN READ ONLY")
        try:
            conn.execute(sql.SQL("SET LOCAL statement_timeout = {}").format(sql.Literal(max(int(timeout * 1000), 1))))
            # The operator's SQL, as written (one statement: the plan checks it); read-only by the transaction.
            cursor = conn.execute(query)
            row = cursor.fetchone() if cursor.description else None
        except psycopg.Error as exc:
            raise BackupError(f"{first_line(exc)}: {_short(query)}") from None
        finally:
            with contextlib.suppress(psycopg.Error):
                conn.execute("ROLLBACK")
    return _smoke_answer(query, row)


# The same smoke query on a database restored some other way (a pgBackRest drill's scratch server).
pg_smoke = _pg_smoke


def _sqlite_smoke(scratch: Path, query: str, *, timeout: float) -> str:
    """As ``_pg_smoke``, on a SQLite scratch opened read-only; the timeout interrupts a query that runs on."""
    deadline = time.monotonic() + timeout
    conn = sqlite3.connect(f"file:{scratch}?mode=ro", uri=True)
    try:
        conn.execute("PRAGMA query_only = ON")
        conn.set_progress_handler(lambda: 1 if time.monotonic() > deadline else 0, 10_000)
        try:
            row = conn.execute(query).fetchone()
        except (sqlite3.Error, sqlite3.Warning) as exc:
            message = f"did not finish within {timeout:g} s" if time.monotonic() > deadline else str(exc)
            raise BackupError(f"{message}: {_short(query)}") from None
    finally:
        conn.close()
    return _smoke_answer(query, row)
