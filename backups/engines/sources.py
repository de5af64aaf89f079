"""Where a database is: a URL or Django's settings made into a ``Database``, and what makes it itself.

Errors name the database by host and name, never by its URL (it may hold a password).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import environ
import psycopg

from backups.engines.errors import BackupError, SourceUnreachable, first_line

PG_ENGINES = {"django.db.backends.postgresql", "django.db.backends.postgresql_psycopg2"}
SQLITE_ENGINE = "django.db.backends.sqlite3"


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
            mine, theirs = file_identity(self.name), file_identity(other.name)
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
            raise SourceUnreachable(f"cannot connect to {self.label}: {first_line(exc)}") from None


def _host_key(host: str) -> str:
    host = (host or "").lower()
    return "localhost" if host in {"", "localhost", "127.0.0.1", "::1"} or host.startswith("/") else host


Identity = tuple[str, int, Any]


def one_row(cursor: psycopg.Cursor[tuple[Any, ...]]) -> tuple[Any, ...]:
    """The row of a query that always answers one (an aggregate, ``SHOW``, a function of the server)."""
    row = cursor.fetchone()
    if row is None:
        raise BackupError("the server answered no row to a query that always has one")
    return row


def identity(db: Database) -> Identity | None:
    """What makes ``db`` itself however its URL spells it; None for a SQLite file that does not exist yet.

    SQLite: the file's device and inode (through symlinks; every hard link shares them). PostgreSQL:
    the server's system identifier (fixed at initdb, one per cluster) and the database's own name as
    the server reports it, read over a connection to ``db``.
    """
    if db.engine == "sqlite":
        return file_identity(db.name)
    with db.connect(autocommit=True) as conn:
        system_id, name = one_row(conn.execute("SELECT system_identifier, current_database() FROM pg_control_system()"))
    return ("postgresql", int(system_id), name)


def identity_on_server(server: Database, name: str) -> Identity:
    """The identity database ``name`` has, or will have once created, on the server ``server`` lives on."""
    with server.connect(autocommit=True) as conn:
        system_id = one_row(conn.execute("SELECT system_identifier FROM pg_control_system()"))[0]
    return ("postgresql", int(system_id), name)


def file_identity(path: str | Path) -> Identity | None:
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
