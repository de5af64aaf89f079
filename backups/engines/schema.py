"""Schema comparison: a restored database's schema against the dump's (PostgreSQL) or the digest recorded
at backup time (SQLite).
"""

from __future__ import annotations

import difflib
import re
import sqlite3
from pathlib import Path

from backups.engines.encryption import StoredDump
from backups.engines.processes import run_tool
from backups.engines.sources import Database
from backups.engines.sqlite import sqlite_schema_digest
from backups.engines.tools import pg_tool

# pg_dump 15.14+/16.10+/17.6+ write "\restrict <random key>" and "\unrestrict <key>"; the key differs per run.


_RESTRICT_LINE = re.compile(r"^\\(un)?restrict\b")


def _schema_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if not _RESTRICT_LINE.match(line)]


_CAST = re.compile(
    r"::(?:\"[^\"]*\"|[a-z_][a-z0-9_.]*)"
    r"(?: varying| precision| with(?:out)? time zone)?(?:\(\d+(?:,\d+)?\))?(?:\[\])*"
)


def _without_casts(line: str) -> str:
    return re.sub(r"[()\s]", "", _CAST.sub("", line))


def pg_schema(dump: StoredDump | Path, scratch: Database, *, timeout: float) -> tuple[str, str]:
    if isinstance(dump, Path):
        dump = StoredDump(dump)
    flags = ["--schema-only", "--no-owner", "--no-privileges"]
    # An encrypted dump is decrypted again as a stream into pg_restore's standard input.
    source, feed = ([], dump.feed) if dump.encrypted else ([str(dump.path)], None)
    from_dump = run_tool(
        [pg_tool("pg_restore"), *flags, "--file=-", *source], env=scratch.pg_env(), timeout=timeout, feed=feed
    )
    restored = run_tool([pg_tool("pg_dump"), *flags, *scratch.pg_args()], env=scratch.pg_env(), timeout=timeout)
    return compare_schema_text(from_dump, restored, "the dump's")


def compare_schema_text(expected_text: str, restored_text: str, whose: str) -> tuple[str, str]:
    """Two ``pg_dump --schema-only`` texts compared; ``whose`` names the expected one in the verdict."""
    expected, actual = _schema_lines(expected_text), _schema_lines(restored_text)
    statements = sum(1 for line in expected if line.startswith(("CREATE ", "ALTER ")))
    if expected == actual:
        return "pass", f"schema identical to {whose} ({statements} statements)"
    # PostgreSQL prints some expressions differently once restored (``x IN ('a', 'b')`` on a varchar
    # column moves its casts): the same definition, up to casts and parentheses, is the same schema.
    if [_without_casts(line) for line in expected] == [_without_casts(line) for line in actual]:
        reprinted = sum(1 for old, new in zip(expected, actual, strict=True) if old != new)
        return "pass", f"schema as in {whose} ({statements} statements, {reprinted} printed with other casts)"
    diff = [
        line
        for line in difflib.unified_diff(expected, actual, "expected", "restored", n=0, lineterm="")
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]
    return "fail", f"schema differs from {whose}: " + " | ".join(diff[:6])


def sqlite_schema(conn: sqlite3.Connection, expected: str) -> tuple[str, str]:
    actual = sqlite_schema_digest(conn)
    if expected and actual != expected:
        return "fail", "schema differs from the one recorded at backup time"
    return "pass", "schema identical to the one recorded at backup time"
