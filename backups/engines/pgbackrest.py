"""pgBackRest: backups of a PostgreSQL cluster whose WAL pgBackRest archives, and point-in-time verification.

The control plane drives the ``pgbackrest`` command (Debian's package): ``backup`` (full or differential),
``info --output=json`` for the backups and the archived WAL range, ``repo-ls`` for the time of the newest
archived WAL segment (the real recovery point), ``check`` to have the latest commit archived, and
``restore --type=time`` into a scratch data directory that a private ``postgres`` serves on a free port
while the checks run (a restore drill: ``restore --type=default`` of one set, to the end of the archived
WAL, then the plan's smoke queries). The scratch (directory and server) always goes away, also on failure
or timeout.

pgBackRest and the scratch server run as the cluster's OS user (``os_user``) when the worker runs as
root: PostgreSQL refuses to run as root, and the repository belongs to that user.
"""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import os
import pwd
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

from backups.engines.errors import BackupError, CheckFailed, ToolMissing, first_line
from backups.engines.postgresql import export_snapshot, pg_row_counts, pg_tables
from backups.engines.processes import Supervised, tail
from backups.engines.schema import compare_schema_text
from backups.engines.sources import Database, one_row
from backups.engines.tools import pg_tool
from backups.engines.verification import (
    CheckResult,
    Reporter,
    Silent,
    VerifyOutcome,
    pg_amcheck_check,
    pg_smoke,
)

logger = logging.getLogger(__name__)

STANZA = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
OS_USER = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
SCRATCH_PREFIX = "verify_pitr_"
# "recovery stopping before commit of transaction 725, time 2026-12-02 14:33:52.367987+00"
_STOPPED = re.compile(r"recovery stopping (before|after) (?:commit|abort) of transaction \d+, time (\S+ \S+)")


def pgbackrest_binary() -> str:
    path = shutil.which("pgbackrest") or "/usr/bin/pgbackrest"
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        raise ToolMissing("pgbackrest not found on PATH: install the pgbackrest package")
    return path


@dataclass(frozen=True)
class Repository:
    """Where a stanza's backups are, and the cluster it backs up. Empty settings come from the config file."""

    stanza: str
    config: str = ""  # the pgbackrest.conf that holds the repository settings; "" for pgBackRest's default
    repo_path: str = ""  # --repo1-path, overriding the config's
    pg_path: str = ""  # --pg1-path: the backed-up cluster's data directory
    pg_port: int | None = None
    pg_socket: str = ""  # --pg1-socket-path
    os_user: str = ""  # the cluster's OS user; "" for the worker's own

    def validate(self) -> None:
        """Bad settings are named before anything runs."""
        if not STANZA.match(self.stanza):
            raise BackupError(f"stanza {self.stanza!r} is not a pgBackRest stanza name (letters, digits, _ . -)")
        for name, value in (("config", self.config), ("repository path", self.repo_path)):
            if value and not os.path.isabs(value):
                raise BackupError(f"the pgBackRest {name} {value!r} is not an absolute path")
        for name, value in (("data directory", self.pg_path), ("socket directory", self.pg_socket)):
            if value and not os.path.isabs(value):
                raise BackupError(f"the PostgreSQL {name} {value!r} is not an absolute path")
        if self.config and not os.path.isfile(self.config):
            raise BackupError(f"the pgBackRest config {self.config} does not exist")
        if self.os_user:
            if not OS_USER.match(self.os_user):
                raise BackupError(f"{self.os_user!r} is not a user name")
            try:
                pwd.getpwnam(self.os_user)
            except KeyError:
                raise BackupError(f"the OS user {self.os_user} does not exist on this machine") from None
            if os.geteuid() != 0 and pwd.getpwuid(os.geteuid()).pw_name != self.os_user:
                raise BackupError(f"pgBackRest runs as {self.os_user}: run the worker as root or as {self.os_user}")

    def args(self, *extra: str) -> list[str]:
        args = [pgbackrest_binary(), f"--stanza={self.stanza}", "--log-level-console=error", "--log-level-stderr=error"]
        if self.config:
            args.append(f"--config={self.config}")
        if self.repo_path:
            args.append(f"--repo1-path={self.repo_path}")
        return [*args, *extra]

    def pg_args(self) -> list[str]:
        args = [f"--pg1-path={self.pg_path}"] if self.pg_path else []
        if self.pg_port:
            args.append(f"--pg1-port={self.pg_port}")
        if self.pg_socket:
            args.append(f"--pg1-socket-path={self.pg_socket}")
        return args

    def run(self, args: list[str], *, timeout: float) -> str:
        try:
            return run_as(args, user=self.os_user, timeout=timeout)
        except BackupError as exc:
            raise BackupError(f"stanza {self.stanza}: {exc}") from None


def run_as(args: list[str], *, user: str, timeout: float, env: dict[str, str] | None = None) -> str:
    """Run ``args`` as ``user`` (when set and the worker is root) in a session of its own; returns stdout.

    Stopped at the deadline with its whole process group: pgBackRest starts helper processes of its own.
    """
    tool = os.path.basename(args[0])
    kwargs: dict[str, Any] = {}
    env = {key: value for key, value in (env or os.environ).items() if not key.startswith("PGBACKREST_")}
    if user and os.geteuid() == 0:
        account = pwd.getpwnam(user)
        kwargs = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
        env["HOME"] = account.pw_dir
    process = subprocess.Popen(  # noqa: S603 - fixed tool path, arguments are ours
        args,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd="/",
        umask=0o077,
        start_new_session=True,
        **kwargs,
    )
    with _Group(process, timeout) as supervised:
        assert process.stdout is not None
        output = process.stdout.read()
        returncode = supervised.wait()
    if supervised.timed_out:
        raise BackupError(f"{tool} {_verb(args)} did not finish within {timeout:g} s and was stopped")
    if returncode != 0:
        message = tail(supervised.stderr) or tail(output.decode("utf-8", "replace")) or "no message"
        raise BackupError(f"{tool} {_verb(args)} failed (exit {returncode}): {message}")
    return output.decode("utf-8", "replace")


def _verb(args: Sequence[str]) -> str:
    return next((arg for arg in reversed(args) if not arg.startswith("-") and "/" not in arg), "")


class _Group(Supervised):
    """``Supervised`` that stops the child's whole process group (it leads a session of its own)."""

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        super().kill()


# --- info ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BackupSet:
    label: str
    type: str  # "full", "diff" or "incr"
    started_at: datetime
    stopped_at: datetime  # the earliest time a restore from this set can stop at
    wal_start: str
    wal_stop: str
    size_bytes: int  # of the cluster
    repo_bytes: int  # stored in the repository for this set alone
    error: bool


@dataclass(frozen=True)
class StanzaInfo:
    stanza: str
    backups: list[BackupSet]
    archive_id: str
    wal_min: str
    wal_max: str
    version: str = ""

    @property
    def oldest(self) -> BackupSet | None:
        usable = [b for b in self.backups if not b.error]
        return min(usable, key=lambda b: b.stopped_at) if usable else None

    def set_for(self, when: datetime) -> BackupSet | None:
        """The backup a restore to ``when`` starts from: the newest that stopped before it."""
        before = [b for b in self.backups if not b.error and b.stopped_at < when]
        return max(before, key=lambda b: b.stopped_at) if before else None


def _timestamp(value: Any) -> datetime:
    return datetime.fromtimestamp(int(value), tz=UTC)


def parse_info(text: str, stanza: str) -> StanzaInfo:
    """``pgbackrest info --output=json`` for ``stanza``; a stanza pgBackRest reports as broken is an error."""
    try:
        document = json.loads(text)
        entry = next(item for item in document if item.get("name") == stanza)
    except (ValueError, TypeError, AttributeError):
        raise BackupError("pgbackrest info did not answer JSON") from None
    except StopIteration:
        raise BackupError(f"pgbackrest info does not list the stanza {stanza}") from None
    status = entry.get("status") or {}
    if status.get("code") not in (0, 2):  # 2: "no valid backups", still a stanza with WAL to read
        raise BackupError(f"stanza {stanza}: {status.get('message') or 'unknown error'}")
    try:
        backups = [
            BackupSet(
                label=item["label"],
                type=item["type"],
                started_at=_timestamp(item["timestamp"]["start"]),
                stopped_at=_timestamp(item["timestamp"]["stop"]),
                wal_start=(item.get("archive") or {}).get("start") or "",
                wal_stop=(item.get("archive") or {}).get("stop") or "",
                size_bytes=int(item["info"]["size"]),
                repo_bytes=int(item["info"]["repository"]["delta"]),
                error=bool(item.get("error")),
            )
            for item in entry.get("backup") or []
        ]
        # The current archive (the database's latest id): older ids are of a cluster before an upgrade.
        archives = entry.get("archive") or []
        current = archives[-1] if archives else {}
        versions = [db.get("version", "") for db in entry.get("db") or []]
    except (KeyError, TypeError, ValueError) as exc:
        raise BackupError(f"pgbackrest info: unexpected JSON ({type(exc).__name__}: {exc})") from None
    return StanzaInfo(
        stanza=stanza,
        backups=sorted(backups, key=lambda b: b.stopped_at),
        archive_id=current.get("id") or "",
        wal_min=current.get("min") or "",
        wal_max=current.get("max") or "",
        version=versions[-1] if versions else "",
    )


def parse_wal_listing(text: str, segment: str) -> datetime | None:
    """When ``segment`` was archived, from ``repo-ls --output=json`` of its folder (None if not there)."""
    try:
        listing = json.loads(text)
    except ValueError:
        raise BackupError("pgbackrest repo-ls did not answer JSON") from None
    times: list[int] = [
        int(entry["time"])
        for name, entry in listing.items()
        if name.startswith(f"{segment}-")
        and isinstance(entry, dict)
        and entry.get("type") == "file"
        and "time" in entry
    ]
    return _timestamp(max(times)) if times else None


def info(repo: Repository, *, timeout: float) -> StanzaInfo:
    repo.validate()
    return parse_info(repo.run(repo.args("--output=json", "info"), timeout=timeout), repo.stanza)


def latest_wal_at(repo: Repository, stanza_info: StanzaInfo, *, timeout: float) -> datetime | None:
    """When the newest archived WAL segment reached the repository: the recovery point it offers."""
    if not stanza_info.wal_max or not stanza_info.archive_id:
        return None
    folder = f"archive/{repo.stanza}/{stanza_info.archive_id}/{stanza_info.wal_max[:16]}"
    text = repo.run(repo.args("--output=json", "repo-ls", folder), timeout=timeout)
    return parse_wal_listing(text, stanza_info.wal_max)


@dataclass(frozen=True)
class Window:
    """What can be recovered: from the oldest backup's end to the newest archived WAL."""

    start: datetime | None
    end: datetime | None
    info: StanzaInfo

    @property
    def open(self) -> bool:
        return self.start is not None and self.end is not None and self.end > self.start


def window(repo: Repository, *, timeout: float) -> Window:
    stanza_info = info(repo, timeout=timeout)
    oldest = stanza_info.oldest
    return Window(oldest.stopped_at if oldest else None, latest_wal_at(repo, stanza_info, timeout=timeout), stanza_info)


def backup(repo: Repository, *, kind: str, timeout: float) -> str:
    """Take a ``full`` or ``diff`` backup; pgBackRest makes a differential full when there is no full yet."""
    if kind not in ("full", "diff"):
        raise BackupError(f"backup type {kind!r}: full or diff")
    repo.validate()
    return repo.run(repo.args(*repo.pg_args(), f"--type={kind}", "backup"), timeout=timeout)


def archive_now(repo: Repository, source: Database, *, timeout: float) -> None:
    """Write a commit record on the source and wait until its WAL is archived (``pgbackrest check``).

    A recovery to a time stops at the first commit after it; without one archived after the chosen time
    PostgreSQL ends recovery early and refuses to start. The commit touches no table.
    """
    try:
        with source.connect(autocommit=False) as conn:
            conn.execute("SELECT pg_current_xact_id()")
            conn.commit()
    except psycopg.Error as exc:
        raise BackupError(f"cannot write a commit record on {source.label}: {first_line(exc)}") from None
    repo.run(repo.args(*repo.pg_args(), "check"), timeout=timeout)


def pick_time(
    start: datetime, end: datetime, *, missing_days: Sequence[date] = (), rng: random.Random | None = None
) -> datetime:
    """A random time inside ``[start, end]``, on the earliest unverified day it reaches, if any."""
    rng = rng or random.SystemRandom()
    low, high = start + timedelta(seconds=1), end
    for day in sorted(missing_days):
        day_start = datetime.combine(day, datetime.min.time(), tzinfo=UTC)
        day_low, day_high = max(low, day_start), min(high, day_start + timedelta(days=1))
        if day_low < day_high:
            low, high = day_low, day_high
            break
    if high <= low:
        raise BackupError("the recoverable window is empty: take a backup and let WAL be archived first")
    seconds = (high - low).total_seconds()
    return (low + timedelta(seconds=rng.uniform(0, seconds))).replace(microsecond=0)


# --- point-in-time verification ------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _server_tool(data: Path, name: str) -> str:
    """The tool of the restored cluster's major version (its PG_VERSION), else the newest one found."""
    with contextlib.suppress(OSError):
        version = (data / "PG_VERSION").read_text().strip()
        for path in glob.glob(f"/usr/lib/postgresql/{version}/bin/{name}"):
            return path
    return pg_tool(name)


@dataclass
class PitrVerifier:
    """Restores a stanza to ``target_time`` into a scratch data directory, starts it, checks it, removes it.

    ``on_scratch(path)`` is called before the directory is made, so that a janitor can remove what a
    process that died half-way left (``remove_scratch``).

    A restore drill passes ``target_time=None`` and ``smoke_queries``: the set ``backup_label`` (pgBackRest's
    latest when "") is restored to the end of the archived WAL (``--type=default``: recovery replays all
    there is, then promotes), and instead of the verification's checks each smoke query runs read-only on
    the source's database in the scratch and must return a row (none: every table is read);
    ``outcome.ready_at`` marks when the last one answered. The source itself is never read then.
    """

    repo: Repository
    source: Database  # a drill uses only its database name and user, for the restored copy
    target_time: datetime | None  # None: to the end of the archived WAL (a drill)
    timeout: float
    scratch_parent: str = ""
    on_scratch: Callable[[str], None] = lambda path: None
    # Run beside the restore, finished before the server starts: ``archive_now``, whose commit after the
    # target time recovery must find archived (pgbackrest check waits for the archiver) -- in parallel,
    # its wait costs nothing while pgBackRest copies the files.
    alongside: Callable[[], object] | None = None
    # True: ``run`` stops the scratch server but leaves its directory to the caller, who removes it
    # (``remove_scratch``) once the verdict is recorded; the operator does not wait for the deletion.
    leave_directory: bool = False
    smoke_queries: Sequence[str] | None = None  # a drill's (see above); None: a point-in-time verification
    progress: Reporter = field(default_factory=Silent)
    outcome: VerifyOutcome = field(default_factory=VerifyOutcome)
    recovered_to: datetime | None = None
    backup_label: str = ""

    def run(self) -> VerifyOutcome:
        scratch: Path | None = None
        drill = self.smoke_queries is not None
        self._beside = _Beside(self.alongside)
        # The source's schema is read while pgBackRest restores: it does not depend on the restore. A drill
        # compares nothing with the source and never touches it.
        self._source_schema = _Beside(None if drill else lambda: _dump_schema(self.source, timeout=self.timeout))
        try:
            # Named and recorded before it is made: a death in between leaves a name the janitor can remove.
            path = Path(self.scratch_parent or tempfile.gettempdir()) / f"{SCRATCH_PREFIX}{secrets.token_hex(8)}"
            self.on_scratch(str(path))
            path.mkdir(mode=0o700)  # never one that exists: it would not be ours to remove
            scratch = path
            if self.repo.os_user and os.geteuid() == 0:
                account = pwd.getpwnam(self.repo.os_user)
                os.chown(scratch, account.pw_uid, account.pw_gid)
            self.progress.report(phase="restore")
            db = self._restored(scratch)
            if drill:
                self._smoke(db)
                return self.outcome
            self._check("recovered_to_time", lambda: self._recovered(scratch, db))
            # The three reads of the restored server run together, each on its own connection or tool.
            # pg_amcheck may create the amcheck extension; the schema is dumped from a snapshot taken
            # before it starts, so that it never sees an extension the check made itself.
            with _snapshot(db) as snapshot:
                self._checks_together(
                    ("row_counts", lambda: _count_rows(db)),
                    ("schema", lambda: self._schema(db, snapshot)),
                    ("integrity", lambda: pg_amcheck_check(db, timeout=self.timeout)),
                )
        except CheckFailed:
            pass
        except BackupError as exc:
            self.outcome.checks.append(CheckResult("setup", "fail", str(exc), 0))
        finally:
            for beside in (self._beside, self._source_schema):
                with contextlib.suppress(BackupError):
                    beside.join()
            if scratch is None:
                self.outcome.scratch_dropped = True
            elif self.leave_directory:
                stop_scratch(str(scratch))
            else:
                self.outcome.scratch_dropped = remove_scratch(str(scratch))
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

    def _checks_together(self, *checks: tuple[str, Callable[[], str | tuple[str, str]]]) -> None:
        """Run ``checks`` at once; their results are kept in the order given, the first failure raised."""
        runs = [(name, time.perf_counter(), _Beside(fn)) for name, fn in checks]
        failed: CheckFailed | None = None
        for name, start, run in runs:
            try:
                result = run.join()
            except BackupError as exc:
                result = ("fail", str(exc))
            status, detail = result if isinstance(result, tuple) else ("pass", result)
            self.outcome.checks.append(CheckResult(name, status, detail, _ms(start)))
            if status == "fail" and failed is None:
                failed = CheckFailed(name, detail)
        if failed is not None:
            raise failed

    def _restored(self, scratch: Path) -> Database:
        data = scratch / "data"
        port = free_port()
        db = Database("postgresql", self.source.name, str(scratch), port, self.source.user or self.repo.os_user)
        if self.target_time is None:  # a drill: the set, then all the archived WAL; promoted at its end
            target = "the end of the archived WAL"
            recovery = ["--type=default", *([f"--set={self.backup_label}"] if self.backup_label else [])]
        else:
            target = self.target_time.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S+00")
            recovery = ["--type=time", f"--target={target}", "--target-action=promote"]

        def restore() -> str:
            start = time.perf_counter()
            self.repo.run(
                self.repo.args(
                    f"--pg1-path={data}",
                    *recovery,
                    "--archive-mode=off",  # the scratch never pushes WAL into the repository
                    f"--tablespace-map-all={scratch / 'tablespaces'}",  # never into the source's tablespaces
                    "restore",
                ),
                timeout=self.timeout,
            )
            self._beside.join()  # raises what it raised
            self._start(scratch, data, port)
            _wait_promoted(db, deadline=time.monotonic() + self.timeout)
            self.outcome.restore_ms = _ms(start)
            origin = self.backup_label or "the repository"
            reached = _last_replayed(db) if self.target_time is None else ""
            return (
                f"restored to {target} from {origin}{reached}, started on port {port}, in {self.outcome.restore_ms} ms"
            )

        self._check("restore", restore)
        return db

    def _smoke(self, db: Database) -> None:
        """A drill's proof of a working database, as the dump Verifier's: each smoke query answers read-only
        (with none, every table is read to its end); ``ready_at`` marks when the last one did."""
        queries = list(self.smoke_queries or [])
        if not queries:
            self._check("row_counts", lambda: _count_rows(db))
        for number, query in enumerate(queries, start=1):
            self._check(f"smoke_{number}", lambda query=query: pg_smoke(db, query, timeout=self.timeout))  # type: ignore[misc]
            self.progress.report(phase="smoke queries", done=number, total=len(queries), unit="queries")
        self.outcome.ready_at = time.perf_counter()

    def _start(self, scratch: Path, data: Path, port: int) -> str:
        # A data directory of a Debian cluster keeps its configuration in /etc: the scratch gets its own.
        for name in ("postgresql.conf", "pg_ident.conf"):
            if not (data / name).exists():
                _write_as(data / name, "", self.repo.os_user)
        _write_as(scratch / "pg_hba.conf", "local all all trust\n", self.repo.os_user)
        options = [
            f"-c port={port}",
            "-c listen_addresses=''",
            f"-c unix_socket_directories='{scratch}'",
            "-c archive_mode=off",
            f"-c hba_file='{scratch / 'pg_hba.conf'}'",
            f"-c ident_file='{data / 'pg_ident.conf'}'",
            "-c logging_collector=off",
            "-c log_destination=stderr",
            "-c ssl=off",
            "-c shared_preload_libraries=''",
        ]
        command = [
            _server_tool(data, "pg_ctl"),
            "start",
            "-D",
            str(data),
            "-l",
            str(scratch / "postgres.log"),
            "-w",
            "-t",
            str(max(int(self.timeout), 1)),
            "-o",
            " ".join(options),
        ]
        try:
            run_as(command, user=self.repo.os_user, timeout=self.timeout + 5)
        except BackupError as exc:
            raise BackupError(f"{exc}; the server said: {tail(_read(scratch / 'postgres.log'), 4)}") from None
        return "started"

    def _recovered(self, scratch: Path, db: Database) -> tuple[str, str]:
        target_time = self.target_time
        if target_time is None:
            return "skip", "restored to the end of the archived WAL: no target time to stop at"
        log = _read(scratch / "postgres.log")
        stops = _STOPPED.findall(log)
        with db.connect(autocommit=True) as conn:
            replayed = one_row(conn.execute("SELECT pg_last_xact_replay_timestamp()"))[0]
        if not stops:
            return (
                "fail",
                f"the server did not stop recovery at {target_time:%Y-%m-%d %H:%M:%S} UTC: {tail(log, 3)}",
            )
        how, when = stops[-1]
        stopped_at = _pg_time(when)
        if replayed is not None and replayed > target_time:
            return "fail", f"a transaction committed at {replayed} was replayed, after the target time"
        if (how == "before" and stopped_at <= target_time) or (how == "after" and stopped_at > target_time):
            return "fail", f"recovery stopped {how} a commit at {when}, not at the target time"
        self.recovered_to = target_time
        last = f"; the last replayed commit was at {replayed:%Y-%m-%d %H:%M:%S.%f} UTC" if replayed else ""
        return (
            "pass",
            f"recovered to {target_time:%Y-%m-%d %H:%M:%S} UTC: stopped {how} the commit at {when}{last}",
        )

    def _schema(self, db: Database, snapshot: str) -> tuple[str, str]:
        restored = _dump_schema(db, timeout=self.timeout, snapshot=snapshot)
        current = self._source_schema.join()
        # The source's schema today: a migration after the target time shows here as a difference.
        return compare_schema_text(current, restored, "the source's")


@contextlib.contextmanager
def _snapshot(db: Database) -> Iterator[str]:
    """The name of a snapshot of ``db`` as it is now, valid while the block runs: its transaction is held
    open on a connection of its own, closed (the transaction discarded) when the block ends."""
    conn = db.connect(autocommit=False)
    try:
        try:
            name = export_snapshot(conn)
        except psycopg.Error as exc:
            raise BackupError(f"cannot take a snapshot of the restored database: {first_line(exc)}") from None
        yield name
    finally:
        conn.close()


def _dump_schema(db: Database, *, timeout: float, snapshot: str = "") -> str:
    flags = ["--schema-only", "--no-owner", "--no-privileges", *([f"--snapshot={snapshot}"] if snapshot else [])]
    return run_as([pg_tool("pg_dump"), *flags, *db.pg_args()], user="", timeout=timeout, env=db.pg_env())


class _Beside:
    """A function run in a thread now; ``join`` waits for it, then returns its result or raises its
    BackupError (once)."""

    def __init__(self, fn: Callable[[], Any] | None) -> None:
        self.error: BackupError | None = None
        self.result: Any = None
        self.thread: threading.Thread | None = None
        if fn is not None:
            self.thread = threading.Thread(target=self._run, args=(fn,), daemon=True)
            self.thread.start()

    def _run(self, fn: Callable[[], Any]) -> None:
        try:
            self.result = fn()
        except BackupError as exc:
            self.error = exc
        except Exception as exc:  # noqa: BLE001 - reported through the verification
            self.error = BackupError(f"unexpected error: {type(exc).__name__}: {exc}")

    def join(self) -> Any:
        if self.thread is not None:
            self.thread.join()
            self.thread = None
        error, self.error = self.error, None
        if error is not None:
            raise error
        return self.result


def _ms(start: float) -> int:
    return int((time.perf_counter() - start) * 1000)


def _pg_time(text: str) -> datetime:
    """PostgreSQL's log time ``2026-12-02 14:33:52.367987+00``."""
    value = text if re.search(r"[+-]\d\d:\d\d$", text) else f"{text}:00"
    return datetime.fromisoformat(value.replace(" ", "T", 1))


def _write_as(path: Path, text: str, user: str) -> None:
    path.write_text(text)
    if user and os.geteuid() == 0:
        account = pwd.getpwnam(user)
        os.chown(path, account.pw_uid, account.pw_gid)
    os.chmod(path, 0o600)


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _wait_promoted(db: Database, *, deadline: float) -> None:
    """pg_ctl returns once reads are accepted; the checks write (amcheck's extension) after promotion."""
    while True:
        try:
            with db.connect(autocommit=True) as conn:
                if not one_row(conn.execute("SELECT pg_is_in_recovery()"))[0]:
                    return
        except BackupError:
            pass
        if time.monotonic() > deadline:
            raise BackupError("the restored server did not finish recovery in time")
        time.sleep(0.05)


def _last_replayed(db: Database) -> str:
    """When the last commit recovery replayed was made: how recent the drill's restored data is."""
    try:
        with db.connect(autocommit=True) as conn:
            replayed = one_row(conn.execute("SELECT pg_last_xact_replay_timestamp()"))[0]
    except (psycopg.Error, BackupError):
        return ""  # only a detail: the smoke queries say whether the server works
    return f" (the last replayed commit made at {replayed.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC)" if replayed else ""


def _count_rows(db: Database) -> tuple[str, str]:
    """Every table read to its end: a missing or unreadable relation file fails here."""
    try:
        with db.connect(autocommit=True) as conn:
            counts = pg_row_counts(conn, pg_tables(conn))
    except psycopg.Error as exc:
        return "fail", f"reading the restored tables failed: {first_line(exc)}"
    return "pass", f"{len(counts)} tables read, {sum(counts.values())} rows at the target time"


def _running(pid: int) -> bool:
    """Alive and not a zombie: a container's init may never reap the postmaster pg_ctl left to it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def remove_scratch(path: str) -> bool:
    """Stop the scratch server of ``path`` (if running) and remove the directory. Only ever a scratch."""
    scratch = Path(path)
    stop_scratch(path)
    shutil.rmtree(scratch, ignore_errors=True)
    if scratch.exists():
        logger.error("could not remove the scratch directory %s", scratch)
        return False
    return True


def stop_scratch(path: str) -> None:
    """Stop the scratch server of ``path`` if one runs (immediate shutdown). Only ever a scratch."""
    scratch = Path(path)
    if not scratch.name.startswith(SCRATCH_PREFIX):
        raise BackupError(f"refusing to touch {path}: not a point-in-time scratch directory")
    pid_file = scratch / "data" / "postmaster.pid"
    with contextlib.suppress(OSError, ValueError, IndexError):
        pid = int(pid_file.read_text().splitlines()[0])
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGQUIT)  # immediate shutdown: nothing of the scratch needs to be kept
            deadline = time.monotonic() + 10
            while _running(pid) and time.monotonic() < deadline:
                time.sleep(0.02)
            if _running(pid):
                os.kill(pid, signal.SIGKILL)
