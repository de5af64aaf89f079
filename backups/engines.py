"""Dump, verify and restore databases: PostgreSQL through pg_dump/pg_restore, SQLite through its backup API.

Nothing here touches the control plane's models; ``services`` records what these functions return.
Database URLs never leave this module in an error message: errors name the database by host and name.
"""

from __future__ import annotations

import contextlib
import difflib
import glob
import hashlib
import logging
import os
import re
import secrets
import shutil
import sqlite3
import stat
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import environ
import psycopg
from django.conf import settings
from psycopg import sql

logger = logging.getLogger(__name__)
CHUNK = 1024 * 1024
PG_ENGINES = {"django.db.backends.postgresql", "django.db.backends.postgresql_psycopg2"}
SQLITE_ENGINE = "django.db.backends.sqlite3"
# What libpq says when an open connection breaks (a server restart, a network drop, a terminated backend).
_CONNECTION_LOST = re.compile(
    r"server closed the connection unexpectedly|terminating connection|connection to server .* lost"
    r"|could not receive data from server|could not send data to server|SSL SYSCALL error|no connection to the server",
    re.IGNORECASE,
)
# pg_dump 15.14+/16.10+/17.6+ write "\restrict <random key>" and "\unrestrict <key>"; the key differs per run.
_RESTRICT_LINE = re.compile(r"^\\(un)?restrict\b")


class BackupError(Exception):
    """A backup, verification or restore that cannot go on; the message is safe to show and store."""


class ToolMissing(BackupError):
    pass


class SourceUnreachable(BackupError):
    pass


class ScratchIsSource(BackupError):
    """A scratch or restore target that is (or cannot be told apart from) a database that must not be written."""


class CheckFailed(BackupError):
    def __init__(self, check: str, message: str) -> None:
        super().__init__(f"{check}: {message}")
        self.check = check


# --- Where a database is -------------------------------------------------------------------------


@dataclass(frozen=True)
class Database:
    engine: str  # "postgresql" or "sqlite"
    name: str  # PostgreSQL: database name; SQLite: absolute path
    host: str = ""
    port: int = 5432
    user: str = ""
    password: str = field(default="", repr=False)

    @property
    def label(self) -> str:
        """How messages name this database: no user, no password."""
        if self.engine == "sqlite":
            return f"SQLite file {self.name}"
        return f"PostgreSQL database {self.name!r} on {self.host or 'localhost'}:{self.port}"

    def same_database(self, other: Database) -> bool:
        """The same database by its address alone (no connection): a quick first refusal, not the guard.

        Guards compare ``identity()``: a URL can name one PostgreSQL database in many ways (a host alias,
        another user) that no comparison of strings catches.
        """
        if self.engine != other.engine:
            return False
        if self.engine == "sqlite":
            mine, theirs = _file_identity(self.name), _file_identity(other.name)
            if mine is not None and theirs is not None:
                return mine == theirs  # a hard link is another path to the same inode
            return os.path.realpath(self.name) == os.path.realpath(other.name)
        return (_host_key(self.host), self.port, self.name) == (_host_key(other.host), other.port, other.name)

    def with_name(self, name: str) -> Database:
        return Database(self.engine, name, self.host, self.port, self.user, self.password)

    # PostgreSQL client arguments: the password goes through the environment, never argv.
    def pg_args(self, *, positional: bool = False) -> list[str]:
        args = [] if positional else ["--dbname", self.name]
        if self.host:
            args += ["--host", self.host]
        args += ["--port", str(self.port)]
        if self.user:
            args += ["--username", self.user]
        if positional:  # tools that take the database as their last argument (pg_amcheck)
            args.append(self.name)
        return args

    def pg_env(self) -> dict[str, str]:
        env = {**os.environ, "PGCONNECT_TIMEOUT": "10", "PGAPPNAME": "controlplane-backups"}
        env.pop("PGPASSWORD", None)
        if self.password:
            env["PGPASSWORD"] = self.password
        return env

    def connect(self, **kwargs: Any) -> psycopg.Connection:
        try:
            return psycopg.connect(
                host=self.host or None,
                port=self.port,
                user=self.user or None,
                password=self.password or None,
                dbname=self.name,
                connect_timeout=10,
                application_name="controlplane-backups",
                **kwargs,
            )
        except psycopg.OperationalError as exc:
            raise SourceUnreachable(f"cannot connect to {self.label}: {_first_line(exc)}") from None


def _host_key(host: str) -> str:
    host = (host or "").lower()
    return "localhost" if host in {"", "localhost", "127.0.0.1", "::1"} or host.startswith("/") else host


Identity = tuple[str, int, Any]


def identity(db: Database) -> Identity | None:
    """What makes ``db`` itself however its URL spells it; None for a SQLite file that does not exist yet.

    SQLite: the file's device and inode (through symlinks; every hard link shares them). PostgreSQL:
    the server's system identifier (fixed at initdb, one per cluster) and the database's own name as
    the server reports it, read over a connection to ``db``.
    """
    if db.engine == "sqlite":
        return _file_identity(db.name)
    with db.connect(autocommit=True) as conn:
        system_id, name = conn.execute(
            "SELECT system_identifier, current_database() FROM pg_control_system()"
        ).fetchone()
    return ("postgresql", int(system_id), name)


def identity_on_server(server: Database, name: str) -> Identity:
    """The identity database ``name`` has, or will have once created, on the server ``server`` lives on."""
    with server.connect(autocommit=True) as conn:
        system_id = conn.execute("SELECT system_identifier FROM pg_control_system()").fetchone()[0]
    return ("postgresql", int(system_id), name)


def _file_identity(path: str | Path) -> Identity | None:
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise BackupError(f"cannot read SQLite file {path}: {exc.strerror or exc}") from None
    return ("sqlite", info.st_dev, info.st_ino)


def from_settings(db: dict[str, Any]) -> Database:
    engine = db.get("ENGINE", "")
    if engine in PG_ENGINES:
        return Database(
            "postgresql",
            str(db.get("NAME") or ""),
            str(db.get("HOST") or ""),
            int(db.get("PORT") or 5432),
            str(db.get("USER") or ""),
            str(db.get("PASSWORD") or ""),
        )
    if engine == SQLITE_ENGINE:
        name = str(db.get("NAME") or "")
        if not name or name == ":memory:" or name.startswith("file:"):
            raise BackupError("an in-memory SQLite database cannot be backed up")
        return Database("sqlite", os.path.abspath(name))
    raise BackupError(f"unsupported database engine {engine!r}: PostgreSQL and SQLite are supported")


def from_url(url: str, *, variable: str) -> Database:
    """A database from a URL; errors name the variable, never the URL (it may hold a password)."""
    if not url:
        raise BackupError(f"{variable} is empty")
    try:
        config = environ.Env.db_url_config(url)
    except Exception:  # noqa: BLE001 - any parse failure: say which variable, not its value
        raise BackupError(f"{variable} is not a database URL (postgres://... or sqlite:///...)") from None
    if config.get("ENGINE") in PG_ENGINES and not config.get("NAME"):
        raise BackupError(f"{variable} names no database (the path after the host)")
    return from_settings(config)


def from_environment(variable: str) -> Database:
    url = os.environ.get(variable)
    if url is None:
        raise BackupError(f"environment variable {variable} is not set (it should hold the database URL)")
    return from_url(url, variable=variable)


# --- Tools ---------------------------------------------------------------------------------------


def pg_tool(name: str) -> str:
    """The path of a PostgreSQL client tool: PG_BIN_DIR, then PATH, then Debian's versioned directories."""
    if settings.PG_BIN_DIR:  # the operator chose: only there
        candidates = [os.path.join(settings.PG_BIN_DIR, name)]
    else:
        candidates = [found] if (found := shutil.which(name)) else []
        candidates += sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=_version_key, reverse=True)
    for path in candidates:
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    where = f"in PG_BIN_DIR ({settings.PG_BIN_DIR})" if settings.PG_BIN_DIR else "on PATH"
    raise ToolMissing(f"{name} not found {where}: install the PostgreSQL client tools or set PG_BIN_DIR")


def _version_key(path: str) -> tuple[int, ...]:
    match = re.search(r"/postgresql/(\d+)", path)
    return (int(match.group(1)),) if match else (0,)


def tool_version(path: str) -> str:
    result = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30, check=False)  # noqa: S603
    match = re.search(r"\d+(?:\.\d+)+", result.stdout) if result.returncode == 0 else None
    return match.group(0) if match else "unknown"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _tail(text: str, lines: int = 6) -> str:
    kept = [line for line in text.strip().splitlines() if line.strip()]
    return "\n".join(kept[-lines:])[-2000:]


def _ms(start: float) -> int:
    return int((time.perf_counter() - start) * 1000)


# --- Writing a dump: under a temporary name, hashed while written -------------------------------


@dataclass
class Dump:
    path: Path  # the finished local file, not yet in storage
    size_bytes: int
    sha256: str
    engine: str
    tool_versions: dict[str, str]
    manifest: dict[str, Any]


class _HashingWriter:
    def __init__(self, handle: IO[bytes]) -> None:
        self.handle = handle
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, chunk: bytes) -> None:
        self.handle.write(chunk)
        self.digest.update(chunk)
        self.size += len(chunk)


def partial_dir() -> Path:
    return private_dir(Path(settings.BACKUP_TMP_DIR))


_widened_dirs_logged: set[str] = set()


def private_dir(path: Path) -> Path:
    """``path`` as a directory only its owner can enter (0700): dumps hold every row of a database.

    One made wider by hand, or by an older release, is narrowed on use; said once per process.
    """
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        os.chmod(path, mode & 0o700)
        if str(path) not in _widened_dirs_logged:
            _widened_dirs_logged.add(str(path))
            logger.warning("backup directory %s was mode %04o, open to others: set to %04o", path, mode, mode & 0o700)
    return path


def create_private_file(path: Path | str) -> None:
    """Create ``path`` empty and readable by its owner alone (0600), before anything is written into it.

    Refuses a path that exists already, even as a dangling symlink: whatever is there is not ours to fill.
    Written then chmod-ed, the file would be open to other users for a moment.
    """
    os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW, 0o600))


@contextlib.contextmanager
def _partial_file(stem: str) -> Iterator[Path]:
    """A new 0600 file next to the backups; removed unless the caller renamed it away."""
    path = partial_dir() / f"{stem}.{secrets.token_hex(4)}.partial"
    try:
        create_private_file(path)
    except OSError as exc:
        raise _disk_error(exc, "local file") from None
    try:
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _disk_error(exc: OSError, where: str) -> BackupError:
    reason = exc.strerror or str(exc)
    return BackupError(f"writing the dump failed ({where}): {reason}; no backup file was kept")


def dump(source: Database, stem: str, *, timeout: float) -> tuple[Dump, Callable[[], None]]:
    """Dump ``source`` into a finished local file. Returns it and a cleanup for the caller to run.

    The file exists under its final local name only once complete and synced: a failure, a full disk
    or a timeout leave nothing behind that looks like a backup.
    """
    stack = contextlib.ExitStack()
    path = stack.enter_context(_partial_file(stem))
    try:
        if source.engine == "postgresql":
            result = _dump_postgresql(source, path, timeout=timeout)
        else:
            result = _dump_sqlite(source, path)
        done = path.with_suffix(".done")
        os.replace(path, done)
        stack.callback(lambda: done.unlink(missing_ok=True))
        result.path = done
        return result, stack.close
    except BaseException:
        stack.close()
        raise


def _dump_postgresql(source: Database, path: Path, *, timeout: float) -> Dump:
    try:
        return _dump_postgresql_snapshot(source, path, timeout=timeout)
    except psycopg.OperationalError as exc:
        # The connection holding the snapshot (and counting rows) died: the source restarted or the
        # network dropped. pg_dump's own failure, when it saw it first, is a BackupError instead.
        raise SourceUnreachable(f"lost the connection to {source.label} during the dump: {_first_line(exc)}") from None


def _dump_postgresql_snapshot(source: Database, path: Path, *, timeout: float) -> Dump:
    pg_dump = pg_tool("pg_dump")
    versions = {"pg_dump": tool_version(pg_dump)}
    with source.connect(autocommit=False) as conn:
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        snapshot = conn.execute("SELECT pg_export_snapshot()").fetchone()[0]
        versions["server"] = conn.execute("SHOW server_version").fetchone()[0].split(" ")[0]
        tables = _pg_tables(conn)
        # pg_dump reads the same snapshot while this transaction counts rows in it, side by side.
        process = subprocess.Popen(  # noqa: S603 - fixed tool path, arguments are ours
            [pg_dump, "--format=custom", f"--snapshot={snapshot}", "--no-sync", *source.pg_args()],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=source.pg_env(),
            umask=0o077,  # whatever a tool writes on its own is private too
        )
        with _Supervised(process, timeout) as supervised:
            counts: dict[str, int] = {}
            counter = threading.Thread(target=_count_into, args=(conn, tables, counts, supervised), daemon=True)
            counter.start()
            try:
                with open(path, "wb") as handle:
                    writer = _HashingWriter(handle)
                    assert process.stdout is not None
                    while chunk := process.stdout.read(CHUNK):
                        writer.write(chunk)
                    handle.flush()
                    os.fsync(handle.fileno())
            except OSError as exc:
                supervised.kill()
                _stop_counting(conn, counter)
                raise _disk_error(exc, "local file") from None
            returncode = supervised.wait()
            if returncode != 0:  # failed or stopped at the timeout: counts waiting on a lock would never end
                _stop_counting(conn, counter)
            counter.join()
        if supervised.timed_out:
            raise BackupError(f"pg_dump did not finish within {timeout:g} s and was stopped")
        if returncode != 0:
            failure = f"pg_dump failed (exit {returncode}): {_tail(supervised.stderr) or 'no message'}"
            if _CONNECTION_LOST.search(supervised.stderr):
                raise SourceUnreachable(f"lost the connection to {source.label} during the dump: {failure}")
            raise BackupError(failure)
        if supervised.error is not None:
            raise BackupError(f"counting rows failed: {supervised.error}")
        conn.rollback()
    return Dump(path, writer.size, writer.digest.hexdigest(), "postgresql", versions, {"tables": counts})


def _stop_counting(conn: psycopg.Connection, counter: threading.Thread) -> None:
    if counter.is_alive():
        with contextlib.suppress(psycopg.Error):
            conn.cancel_safe(timeout=10)
    counter.join()


def _pg_tables(conn: psycopg.Connection) -> list[tuple[str, str]]:
    rows = conn.execute(
        """
        SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
          AND n.nspname NOT LIKE 'pg\\_%'
          AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype = 'e')
        ORDER BY 1, 2
        """
    ).fetchall()
    return [(schema, name) for schema, name in rows]


def _count_into(
    conn: psycopg.Connection, tables: list[tuple[str, str]], counts: dict[str, int], supervised: _Supervised
) -> None:
    try:
        counts.update(pg_row_counts(conn, tables))
    except Exception as exc:  # noqa: BLE001 - reported through the dump's result
        supervised.error = _first_line(exc)


def pg_row_counts(conn: psycopg.Connection, tables: list[tuple[str, str]]) -> dict[str, int]:
    counts = {}
    for schema, name in tables:
        query = sql.SQL("SELECT count(*) FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(name))
        counts[f"{schema}.{name}"] = conn.execute(query).fetchone()[0]
    return counts


class _Supervised:
    """A child process with a deadline and its stderr drained in the background."""

    def __init__(self, process: subprocess.Popen, timeout: float) -> None:
        self.process = process
        self.timed_out = False
        self.error: str | None = None
        self._stderr: list[bytes] = []
        self._timer = threading.Timer(timeout, self._expire)
        self._timer.daemon = True
        self._drain = threading.Thread(target=self._read_stderr, daemon=True)

    def __enter__(self) -> _Supervised:
        self._timer.start()
        self._drain.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()
        if self.process.poll() is None:
            self.kill()
        self.process.wait()
        self._drain.join(timeout=5)
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()

    def _expire(self) -> None:
        self.timed_out = True
        self.kill()

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        while chunk := self.process.stderr.read(65536):
            if sum(map(len, self._stderr)) < 1_000_000:
                self._stderr.append(chunk)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()

    def wait(self) -> int:
        returncode = self.process.wait()
        self._drain.join(timeout=5)
        return returncode

    @property
    def stderr(self) -> str:
        return b"".join(self._stderr).decode("utf-8", "replace")


def run_tool(args: list[str], *, env: dict[str, str], timeout: float, stdout: IO[bytes] | None = None) -> str:
    """Run a client tool to the end; returns its stderr. Raises BackupError naming the tool on failure."""
    tool = os.path.basename(args[0])
    process = subprocess.Popen(  # noqa: S603 - fixed tool path, arguments are ours
        args, stdout=stdout if stdout is not None else subprocess.PIPE, stderr=subprocess.PIPE, env=env, umask=0o077
    )
    with _Supervised(process, timeout) as supervised:
        output = b""
        if stdout is None:
            assert process.stdout is not None
            output = process.stdout.read()
        returncode = supervised.wait()
    if supervised.timed_out:
        raise BackupError(f"{tool} did not finish within {timeout:g} s and was stopped")
    if returncode != 0:
        raise BackupError(f"{tool} failed (exit {returncode}): {_tail(supervised.stderr) or 'no message'}")
    return output.decode("utf-8", "replace") if stdout is None else supervised.stderr


def _dump_sqlite(source: Database, path: Path) -> Dump:
    if not os.path.isfile(source.name):
        raise SourceUnreachable(f"{source.label} does not exist")
    try:
        src = sqlite3.connect(f"file:{source.name}?mode=ro", uri=True, timeout=30)
    except sqlite3.Error as exc:
        raise SourceUnreachable(f"cannot open {source.label}: {exc}") from None
    try:
        dst = sqlite3.connect(path)
        try:
            src.backup(dst, pages=4096)
            # One self-contained file: a copy of a WAL database must not need a -wal file beside it.
            dst.execute("PRAGMA journal_mode=DELETE")
            manifest = {"tables": sqlite_row_counts(dst), "schema_sha256": sqlite_schema_digest(dst)}
        finally:
            dst.close()
    except sqlite3.Error as exc:
        raise BackupError(f"copying {source.label} failed: {exc}; no backup file was kept") from None
    finally:
        src.close()
    digest, size = file_digest(path)
    versions = {"sqlite": sqlite3.sqlite_version}
    try:
        with open(path, "rb+") as handle:
            os.fsync(handle.fileno())
    except OSError as exc:
        raise _disk_error(exc, "sync") from None
    return Dump(path, size, digest, "sqlite", versions, manifest)


def sqlite_row_counts(conn: sqlite3.Connection) -> dict[str, int]:
    names = [
        row[0]
        for row in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' "
            "ORDER BY name"
        )
    ]
    counts = {}
    for name in names:
        quoted = '"' + name.replace('"', '""') + '"'
        counts[name] = conn.execute(f"SELECT count(*) FROM {quoted}").fetchone()[0]  # noqa: S608 - quoted name
    return counts


def sqlite_schema_digest(conn: sqlite3.Connection) -> str:
    rows = conn.execute(
        "SELECT type, name, tbl_name, coalesce(sql, '') FROM sqlite_master ORDER BY type, name"
    ).fetchall()
    return hashlib.sha256(repr(rows).encode()).hexdigest()


def file_digest(path: Path | str) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


# --- Verification --------------------------------------------------------------------------------


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

    def run(self, local: Path, *, expected_sha256: str, expected_size: int) -> VerifyOutcome:
        try:
            self._check("checksum", lambda: _checksum(local, expected_sha256, expected_size))
            if self.engine == "postgresql":
                self._verify_postgresql(local)
            else:
                self._verify_sqlite(local)
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

    def _verify_postgresql(self, local: Path) -> None:
        server, scratch = self._scratch_database()
        # The scratch does not exist yet: its identity is the server it will be created on plus its name.
        self._refuse_protected(lambda: identity_on_server(server, scratch.name))
        self.on_scratch(scratch.name)
        created = False
        try:
            start = time.perf_counter()

            def restore() -> str:
                nonlocal created
                create_database(server, scratch.name)
                created = True
                run_tool(
                    [
                        pg_tool("pg_restore"),
                        "--no-owner",
                        "--no-privileges",
                        "--exit-on-error",
                        f"--jobs={settings.BACKUP_RESTORE_JOBS}",  # a custom-format file restores in parallel
                        *scratch.pg_args(),
                        str(local),
                    ],
                    env=scratch.pg_env(),
                    timeout=self.timeout,
                )
                self.outcome.restore_ms = _ms(start)
                return f"restored into {scratch.name} in {self.outcome.restore_ms} ms"

            self._check("restore", restore)
            self._check("row_counts", lambda: self._pg_rows(scratch))
            self._check("schema", lambda: _pg_schema(local, scratch, timeout=self.timeout))
            self._check("integrity", lambda: _pg_amcheck(scratch, timeout=self.timeout))
        finally:
            self.outcome.scratch_dropped = True
            if created:
                try:
                    drop_database(server, scratch.name)
                except (BackupError, psycopg.Error) as exc:
                    # The failed check stays the verification's error; run_due drops the scratch later.
                    logger.error("could not drop the scratch database %s: %s", scratch.name, _first_line(exc))
                    self.outcome.scratch_dropped = False

    def _pg_rows(self, scratch: Database) -> str:
        expected: dict[str, int] = self.manifest.get("tables", {})
        with scratch.connect(autocommit=True) as conn:
            restored = pg_row_counts(conn, _pg_tables(conn))
        return _compare_counts(expected, restored)

    # SQLite --------------------------------------------------------------------------------------

    def _verify_sqlite(self, local: Path) -> None:
        scratch = partial_dir() / f"{scratch_name(self.label)}.sqlite3"
        if os.path.realpath(scratch) == os.path.realpath(self.source.name):
            raise ScratchIsSource(f"refusing to verify: the scratch database would be the source ({self.source.label})")
        self._refuse_protected(lambda: _file_identity(scratch))
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

            def restore() -> str:
                try:
                    with open(local, "rb") as src, open(scratch, "r+b") as dst:
                        shutil.copyfileobj(src, dst, CHUNK)
                    conn = sqlite3.connect(scratch)
                    conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
                    conn.close()
                except (OSError, sqlite3.Error) as exc:
                    raise BackupError(f"the dump does not open as a SQLite database: {exc}") from None
                self.outcome.restore_ms = _ms(start)
                return f"restored into {scratch.name} in {self.outcome.restore_ms} ms"

            self._check("restore", restore)
            conn = sqlite3.connect(scratch)
            try:
                self._check(
                    "row_counts", lambda: _compare_counts(self.manifest.get("tables", {}), sqlite_row_counts(conn))
                )
                self._check("schema", lambda: _sqlite_schema(conn, self.manifest.get("schema_sha256", "")))
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


def create_database(server: Database, name: str) -> None:
    with server.connect(autocommit=True) as conn:
        try:
            conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name)))
        except psycopg.Error as exc:
            raise BackupError(f"cannot create the scratch database {name}: {_first_line(exc)}") from None


def drop_database(server: Database, name: str) -> None:
    if not name.startswith("verify_"):  # the only databases this module ever drops
        raise ScratchIsSource(f"refusing to drop {name!r}: not a scratch database")
    with server.connect(autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


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


def _schema_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if not _RESTRICT_LINE.match(line)]


_CAST = re.compile(
    r"::(?:\"[^\"]*\"|[a-z_][a-z0-9_.]*)"
    r"(?: varying| precision| with(?:out)? time zone)?(?:\(\d+(?:,\d+)?\))?(?:\[\])*"
)


def _without_casts(line: str) -> str:
    return re.sub(r"[()\s]", "", _CAST.sub("", line))


def _pg_schema(local: Path, scratch: Database, *, timeout: float) -> tuple[str, str]:
    flags = ["--schema-only", "--no-owner", "--no-privileges"]
    from_dump = run_tool([pg_tool("pg_restore"), *flags, "--file=-", str(local)], env=scratch.pg_env(), timeout=timeout)
    restored = run_tool([pg_tool("pg_dump"), *flags, *scratch.pg_args()], env=scratch.pg_env(), timeout=timeout)
    expected, actual = _schema_lines(from_dump), _schema_lines(restored)
    statements = sum(1 for line in expected if line.startswith(("CREATE ", "ALTER ")))
    if expected == actual:
        return "pass", f"schema identical to the dump's ({statements} statements)"
    # PostgreSQL prints some expressions differently once restored (``x IN ('a', 'b')`` on a varchar
    # column moves its casts): the same definition, up to casts and parentheses, is the same schema.
    if [_without_casts(line) for line in expected] == [_without_casts(line) for line in actual]:
        reprinted = sum(1 for old, new in zip(expected, actual, strict=True) if old != new)
        return "pass", f"schema as in the dump ({statements} statements, {reprinted} printed with other casts)"
    diff = [
        line
        for line in difflib.unified_diff(expected, actual, "dump", "restored", n=0, lineterm="")
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]
    return "fail", "schema differs from the dump's: " + " | ".join(diff[:6])


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


def _sqlite_schema(conn: sqlite3.Connection, expected: str) -> tuple[str, str]:
    actual = sqlite_schema_digest(conn)
    if expected and actual != expected:
        return "fail", "schema differs from the one recorded at backup time"
    return "pass", "schema identical to the one recorded at backup time"


def _sqlite_integrity(conn: sqlite3.Connection) -> tuple[str, str]:
    try:
        rows = [row[0] for row in conn.execute("PRAGMA integrity_check")]
    except sqlite3.Error as exc:
        return "fail", f"PRAGMA integrity_check: {exc}"
    if rows != ["ok"]:
        return "fail", "PRAGMA integrity_check: " + "; ".join(rows[:5])
    return "pass", "PRAGMA integrity_check: ok"


# --- Restore -------------------------------------------------------------------------------------


def restore(local: Path, engine: str, into: Database, *, timeout: float) -> int:
    """Restore a verified-checksum dump into ``into``, replacing what it holds. Returns milliseconds."""
    if engine != into.engine:
        raise BackupError(f"a {engine} backup cannot be restored into {into.label}")
    start = time.perf_counter()
    if engine == "postgresql":
        with into.connect(autocommit=True):
            pass  # reachable, with a clear message if not
        run_tool(
            [
                pg_tool("pg_restore"),
                "--clean",
                "--if-exists",
                "--no-owner",
                "--no-privileges",
                "--exit-on-error",
                "--single-transaction",
                *into.pg_args(),
                str(local),
            ],
            env=into.pg_env(),
            timeout=timeout,
        )
    else:
        try:
            src = sqlite3.connect(f"file:{local}?mode=ro", uri=True)
            dst = sqlite3.connect(into.name, timeout=30)
            try:
                src.backup(dst)
            finally:
                src.close()
                dst.close()
        except sqlite3.Error as exc:
            raise BackupError(f"restoring into {into.label} failed: {exc}") from None
    return _ms(start)
