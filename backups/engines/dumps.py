"""The two ways through: a database dumped into a finished local file, and a dump restored into a database."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from backups.engines.errors import BackupError
from backups.engines.files import Dump, OnBytes, partial_file
from backups.engines.postgresql import dump_postgresql
from backups.engines.processes import run_tool
from backups.engines.sources import Database
from backups.engines.sqlite import dump_sqlite
from backups.engines.tools import pg_tool


def dump(
    source: Database, stem: str, *, timeout: float, on_bytes: OnBytes | None = None
) -> tuple[Dump, Callable[[], None]]:
    """Dump ``source`` into a finished local file. Returns it and a cleanup for the caller to run.

    The file exists under its final local name only once complete and synced: a failure, a full disk
    or a timeout leave nothing behind that looks like a backup.
    """
    stack = contextlib.ExitStack()
    path = stack.enter_context(partial_file(stem))
    try:
        if source.engine == "postgresql":
            result = dump_postgresql(source, path, timeout=timeout, on_bytes=on_bytes)
        else:
            result = dump_sqlite(source, path, on_bytes=on_bytes)
        done = path.with_suffix(".done")
        os.replace(path, done)
        stack.callback(lambda: done.unlink(missing_ok=True))
        result.path = done
        return result, stack.close
    except BaseException:
        stack.close()
        raise


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
    return int((time.perf_counter() - start) * 1000)
