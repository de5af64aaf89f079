"""Dump, verify and restore databases: PostgreSQL through pg_dump/pg_restore, SQLite through its backup API.

Nothing here touches the control plane's models; ``services`` records what these functions return.
Database URLs never leave this package in an error message: errors name the database by host and name.

One module per concern, each importing only the ones below it:

    errors        the failures, with messages safe to show and store
    sources       where a database is (URLs, Django settings) and what makes it itself
    tools         finding the PostgreSQL client tools and their versions
    processes     a client tool run under a deadline, its stderr drained aside
    files         private directories, partial files, digests, the ``Dump`` record
    encryption    age (pyrage): recipients and identities read, dumps encrypted and decrypted as streams
    postgresql    pg_dump on an exported snapshot, rows counted in it; scratch databases
    sqlite        SQLite's backup API, row counts and schema digest
    schema        a restored schema compared with the dump's
    verification  the ``Verifier``: restore into a scratch, then the checks
    dumps         ``dump`` and ``restore``, the entry points for either engine
    pgbackrest    pgBackRest's backups, its recoverable window, and point-in-time verification

The names below are the package's interface for the rest of ``backups``.
"""

from __future__ import annotations

from backups.engines.dumps import dump, restore
from backups.engines.encryption import (
    AgeIdentity,
    EncryptionError,
    Recipient,
    StoredDump,
    parse_recipients,
    read_identities,
)
from backups.engines.errors import BackupError, CheckFailed, ScratchIsSource, SourceUnreachable, ToolMissing
from backups.engines.files import CHUNK, Dump, create_private_file, file_digest, partial_dir, private_dir
from backups.engines.pgbackrest import (
    PitrVerifier,
    Repository,
    StanzaInfo,
    Window,
    pgbackrest_binary,
    remove_scratch,
)
from backups.engines.postgresql import create_database, drop_database, pg_row_counts, pg_tables
from backups.engines.processes import run_tool
from backups.engines.sources import (
    PG_ENGINES,
    SQLITE_ENGINE,
    Database,
    Identity,
    from_environment,
    from_settings,
    from_url,
    identity,
    identity_on_server,
)
from backups.engines.sqlite import sqlite_row_counts, sqlite_schema_digest
from backups.engines.tools import pg_tool, tool_version
from backups.engines.verification import CheckResult, Reporter, Silent, Verifier, VerifyOutcome, scratch_name

__all__ = [
    "AgeIdentity",
    "EncryptionError",
    "Recipient",
    "StoredDump",
    "parse_recipients",
    "read_identities",
    "CHUNK",
    "PG_ENGINES",
    "SQLITE_ENGINE",
    "BackupError",
    "CheckFailed",
    "CheckResult",
    "Database",
    "Dump",
    "Identity",
    "PitrVerifier",
    "Reporter",
    "Repository",
    "ScratchIsSource",
    "Silent",
    "SourceUnreachable",
    "StanzaInfo",
    "ToolMissing",
    "Verifier",
    "VerifyOutcome",
    "Window",
    "create_database",
    "create_private_file",
    "drop_database",
    "dump",
    "file_digest",
    "from_environment",
    "from_settings",
    "from_url",
    "identity",
    "identity_on_server",
    "partial_dir",
    "pg_row_counts",
    "pg_tables",
    "pg_tool",
    "pgbackrest_binary",
    "private_dir",
    "remove_scratch",
    "restore",
    "run_tool",
    "scratch_name",
    "sqlite_row_counts",
    "sqlite_schema_digest",
    "tool_version",
]
