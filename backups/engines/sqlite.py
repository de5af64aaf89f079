"""SQLite: a dump through its backup API into one self-contained file; row counts and schema digest."""

from __future__ import annotations

import hashlib
import os
import sqlite3
from pathlib import Path

from backups.engines.errors import BackupError, SourceUnreachable
from backups.engines.files import Dump, OnBytes, disk_error, file_digest
from backups.engines.sources import Database


def dump_sqlite(source: Database, path: Path, *, on_bytes: OnBytes | None = None) -> Dump:
    if not os.path.isfile(source.name):
        raise SourceUnreachable(f"{source.label} does not exist")
    try:
        src = sqlite3.connect(f"file:{source.name}?mode=ro", uri=True, timeout=30)
    except sqlite3.Error as exc:
        raise SourceUnreachable(f"cannot open {source.label}: {exc}") from None
    try:
        dst = sqlite3.connect(path)
        try:
            page_size = int(src.execute("PRAGMA page_size").fetchone()[0])

            def copied(status: int, remaining: int, total: int) -> None:
                if on_bytes is not None:
                    on_bytes((total - remaining) * page_size)

            src.backup(dst, pages=4096, progress=copied)
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
        raise disk_error(exc, "sync") from None
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
