"""SQLite: a dump through its backup API into one self-contained file; row counts and schema digest."""

from __future__ import annotations

import hashlib
import io
import os
import sqlite3
from collections.abc import Sequence
from pathlib import Path

from backups.engines.encryption import Recipient, write_stream
from backups.engines.errors import BackupError, SourceUnreachable
from backups.engines.files import Dump, disk_error, file_digest
from backups.engines.sources import Database


def dump_sqlite(source: Database, path: Path, *, recipients: Sequence[Recipient] = ()) -> Dump:
    if not os.path.isfile(source.name):
        raise SourceUnreachable(f"{source.label} does not exist")
    try:
        src = sqlite3.connect(f"file:{source.name}?mode=ro", uri=True, timeout=30)
    except sqlite3.Error as exc:
        raise SourceUnreachable(f"cannot open {source.label}: {exc}") from None
    if recipients:
        return _dump_sqlite_encrypted(source, src, path, recipients)
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
    _sync(path)
    return Dump(path, size, digest, "sqlite", versions, manifest, plaintext_sha256=digest, plaintext_size=size)


def _dump_sqlite_encrypted(
    source: Database, src: sqlite3.Connection, path: Path, recipients: Sequence[Recipient]
) -> Dump:
    """The backup API's copy made in memory and serialized through the encryptor: no plaintext file."""
    try:
        memory = sqlite3.connect(":memory:")
        try:
            src.backup(memory, pages=4096)
            manifest = {"tables": sqlite_row_counts(memory), "schema_sha256": sqlite_schema_digest(memory)}
            image = bytearray(memory.serialize())
        finally:
            memory.close()
    except sqlite3.Error as exc:
        raise BackupError(f"copying {source.label} failed: {exc}; no backup file was kept") from None
    finally:
        src.close()
    # One self-contained file: the copy of a WAL database says "WAL" in its header (file format
    # versions, bytes 18 and 19); 1 is the rollback journal, as PRAGMA journal_mode=DELETE writes on a file.
    if len(image) >= 20 and image[18] == 2:
        image[18] = image[19] = 1
    try:
        with open(path, "wb") as handle:
            digests = write_stream(io.BytesIO(bytes(image)), handle, recipients)
    except OSError as exc:
        raise disk_error(exc, "local file") from None
    _sync(path)
    return Dump(
        path,
        digests.stored_size,
        digests.stored_sha256,
        "sqlite",
        {"sqlite": sqlite3.sqlite_version},
        manifest,
        plaintext_sha256=digests.plaintext_sha256,
        plaintext_size=digests.plaintext_size,
        encrypted=True,
    )


def _sync(path: Path) -> None:
    try:
        with open(path, "rb+") as handle:
            os.fsync(handle.fileno())
    except OSError as exc:
        raise disk_error(exc, "sync") from None


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
