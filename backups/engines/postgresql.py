"""PostgreSQL: a dump through pg_dump on an exported snapshot, with the rows counted in that same snapshot;
scratch databases created and dropped.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import threading
from collections.abc import Sequence
from pathlib import Path

import psycopg
from psycopg import sql

from backups.engines.encryption import Recipient, write_stream
from backups.engines.errors import BackupError, ScratchIsSource, SourceUnreachable, first_line
from backups.engines.files import Dump, OnBytes, disk_error
from backups.engines.processes import Supervised, tail
from backups.engines.sources import Database, one_row
from backups.engines.tools import pg_tool, tool_version

# What libpq says when an open connection breaks (a server restart, a network drop, a terminated backend).


_CONNECTION_LOST = re.compile(
    r"server closed the connection unexpectedly|terminating connection|connection to server .* lost"
    r"|could not receive data from server|could not send data to server|SSL SYSCALL error|no connection to the server",
    re.IGNORECASE,
)


def dump_postgresql(
    source: Database,
    path: Path,
    *,
    timeout: float,
    recipients: Sequence[Recipient] = (),
    on_bytes: OnBytes | None = None,
) -> Dump:
    """pg_dump's output streamed into ``path``, through the age encryptor when there are ``recipients``.

    ``on_bytes`` is told the bytes written so far (what is stored: the ciphertext when encrypted).
    """
    try:
        return _dump_postgresql_snapshot(source, path, timeout=timeout, recipients=recipients, on_bytes=on_bytes)
    except psycopg.OperationalError as exc:
        # The connection holding the snapshot (and counting rows) died: the source restarted or the
        # network dropped. pg_dump's own failure, when it saw it first, is a BackupError instead.
        raise SourceUnreachable(f"lost the connection to {source.label} during the dump: {first_line(exc)}") from None


def export_snapshot(conn: psycopg.Connection) -> str:
    """Open a read-only repeatable-read transaction on ``conn`` (not in autocommit) and export its
    snapshot: ``pg_dump --snapshot=<name>`` then reads the database as it was, for as long as that
    transaction stays open."""
    conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
    return str(one_row(conn.execute("SELECT pg_export_snapshot()"))[0])


def _dump_postgresql_snapshot(
    source: Database, path: Path, *, timeout: float, recipients: Sequence[Recipient], on_bytes: OnBytes | None
) -> Dump:
    pg_dump = pg_tool("pg_dump")
    versions = {"pg_dump": tool_version(pg_dump)}
    with source.connect(autocommit=False) as conn:
        snapshot = export_snapshot(conn)
        versions["server"] = one_row(conn.execute("SHOW server_version"))[0].split(" ")[0]
        tables = pg_tables(conn)
        # pg_dump reads the same snapshot while this transaction counts rows in it, side by side.
        process = subprocess.Popen(  # noqa: S603 - fixed tool path, arguments are ours
            [pg_dump, "--format=custom", f"--snapshot={snapshot}", "--no-sync", *source.pg_args()],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=source.pg_env(),
            umask=0o077,  # whatever a tool writes on its own is private too
        )
        with Supervised(process, timeout) as supervised:
            counts: dict[str, int] = {}
            counter = threading.Thread(target=_count_into, args=(conn, tables, counts, supervised), daemon=True)
            counter.start()
            try:
                with open(path, "wb") as handle:
                    assert process.stdout is not None
                    digests = write_stream(process.stdout, handle, recipients, on_bytes)
                    handle.flush()
                    os.fsync(handle.fileno())
            except OSError as exc:
                supervised.kill()
                _stop_counting(conn, counter)
                raise disk_error(exc, "local file") from None
            except BackupError:  # the encryptor failed (or the disk under it): pg_dump is stopped
                supervised.kill()
                _stop_counting(conn, counter)
                raise
            returncode = supervised.wait()
            if returncode != 0:  # failed or stopped at the timeout: counts waiting on a lock would never end
                _stop_counting(conn, counter)
            counter.join()
        if supervised.timed_out:
            raise BackupError(f"pg_dump did not finish within {timeout:g} s and was stopped")
        if returncode != 0:
            failure = f"pg_dump failed (exit {returncode}): {tail(supervised.stderr) or 'no message'}"
            if _CONNECTION_LOST.search(supervised.stderr):
                raise SourceUnreachable(f"lost the connection to {source.label} during the dump: {failure}")
            raise BackupError(failure)
        if supervised.error is not None:
            raise BackupError(f"counting rows failed: {supervised.error}")
        conn.rollback()
    return Dump(
        path,
        digests.stored_size,
        digests.stored_sha256,
        "postgresql",
        versions,
        {"tables": counts},
        plaintext_sha256=digests.plaintext_sha256,
        plaintext_size=digests.plaintext_size,
        encrypted=bool(recipients),
    )


def _stop_counting(conn: psycopg.Connection, counter: threading.Thread) -> None:
    if counter.is_alive():
        with contextlib.suppress(psycopg.Error):
            conn.cancel_safe(timeout=10)
    counter.join()


def pg_tables(conn: psycopg.Connection) -> list[tuple[str, str]]:
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
    conn: psycopg.Connection, tables: list[tuple[str, str]], counts: dict[str, int], supervised: Supervised
) -> None:
    try:
        counts.update(pg_row_counts(conn, tables))
    except Exception as exc:  # noqa: BLE001 - reported through the dump's result
        supervised.error = first_line(exc)


def pg_row_counts(conn: psycopg.Connection, tables: list[tuple[str, str]]) -> dict[str, int]:
    counts = {}
    for schema, name in tables:
        query = sql.SQL("SELECT count(*) FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(name))
        counts[f"{schema}.{name}"] = one_row(conn.execute(query))[0]
    return counts


def create_database(server: Database, name: str) -> None:
    with server.connect(autocommit=True) as conn:
        try:
            conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name)))
        except psycopg.Error as exc:
            raise BackupError(f"cannot create the scratch database {name}: {first_line(exc)}") from None


def drop_database(server: Database, name: str) -> None:
    if not name.startswith("verify_"):  # the only databases this module ever drops
        raise ScratchIsSource(f"refusing to drop {name!r}: not a scratch database")
    with server.connect(autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
