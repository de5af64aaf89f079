"""The two ways through: a database dumped into a finished local file, and a dump restored into a database."""

from __future__ import annotations

import contextlib
import io
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from backups.engines.encryption import Recipient, StoredDump
from backups.engines.errors import BackupError
from backups.engines.files import Dump, partial_file
from backups.engines.postgresql import dump_postgresql
from backups.engines.processes import run_tool
from backups.engines.sources import Database
from backups.engines.sqlite import dump_sqlite
from backups.engines.tools import pg_tool


def dump(
    source: Database, stem: str, *, timeout: float, recipients: Sequence[Recipient] = ()
) -> tuple[Dump, Callable[[], None]]:
    """Dump ``source`` into a finished local file. Returns it and a cleanup for the caller to run.

    With ``recipients`` the dump is encrypted to them with age as it is written: no plaintext reaches the disk.

    The file exists under its final local name only once complete and synced: a failure, a full disk
    or a timeout leave nothing behind that looks like a backup.
    """
    stack = contextlib.ExitStack()
    path = stack.enter_context(partial_file(stem))
    try:
        if source.engine == "postgresql":
            result = dump_postgresql(source, path, timeout=timeout, recipients=recipients)
        else:
            result = dump_sqlite(source, path, recipients=recipients)
        done = path.with_suffix(".done")
        os.replace(path, done)
        stack.callback(lambda: done.unlink(missing_ok=True))
        result.path = done
        return result, stack.close
    except BaseException:
        stack.close()
        raise


def restore(dump: StoredDump | Path, engine: str, into: Database, *, timeout: float) -> int:
    """Restore a verified-checksum dump into ``into``, replacing what it holds. Returns milliseconds.

    An encrypted dump is decrypted as a stream (into pg_restore's standard input; for SQLite into memory,
    checked, then copied in with the backup API), its plaintext checked against the one recorded.
    """
    if isinstance(dump, Path):
        dump = StoredDump(dump)
    if engine != into.engine:
        raise BackupError(f"a {engine} backup cannot be restored into {into.label}")
    start = time.perf_counter()
    if engine == "postgresql":
        with into.connect(autocommit=True):
            pass  # reachable, with a clear message if not
        plaintext: list[tuple[str, int]] = []
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
                *([] if dump.encrypted else [str(dump.path)]),
            ],
            env=into.pg_env(),
            timeout=timeout,
            feed=(lambda stdin: plaintext.append(dump.feed(stdin))) if dump.encrypted else None,
        )
        if dump.encrypted:
            # Inside pg_restore's single transaction a mismatch would already have failed it (a corrupt
            # stream does not restore); this catches a stream that decrypts but is not the one backed up.
            dump.check(plaintext[0])
    else:
        try:
            if dump.encrypted:
                # Decrypted into memory and checked before a byte reaches ``into``: no plaintext file.
                image = io.BytesIO()
                dump.check(dump.feed(image))
                src = sqlite3.connect(":memory:")
                src.deserialize(image.getbuffer())
            else:
                src = sqlite3.connect(f"file:{dump.path}?mode=ro", uri=True)
            dst = sqlite3.connect(into.name, timeout=30)
            try:
                src.backup(dst)
            finally:
                src.close()
                dst.close()
        except sqlite3.Error as exc:
            raise BackupError(f"restoring into {into.label} failed: {exc}") from None
    return int((time.perf_counter() - start) * 1000)
