"""A PostgreSQL cluster of its own whose WAL pgBackRest archives, in a temporary directory: for the
point-in-time tests and bench/pitr.py.

initdb and pg_ctl come from /usr/lib/postgresql/<newest>/bin; the cluster listens on 127.0.0.1 and a
socket in its directory, on a free port; pgbackrest.conf sits beside it (repository, logs, locks all in
the directory), the stanza is created and archive_command points at ``pgbackrest --config``. As root,
the cluster and pgBackRest run as the ``postgres`` user (PostgreSQL refuses root).
"""

from __future__ import annotations

import glob
import os
import pwd
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

PGBACKREST = shutil.which("pgbackrest") or "/usr/bin/pgbackrest"


def pgbackrest_missing() -> str:
    """Why the point-in-time tests cannot run here, or ""."""
    if not (os.path.isfile(PGBACKREST) and os.access(PGBACKREST, os.X_OK)):
        return "pgbackrest is not installed (apt-get install pgbackrest)"
    return ""


def server_bin() -> Path:
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(re.search(r"/postgresql/(\d+)/", p).group(1)),  # type: ignore[union-attr]
    )
    if not found:
        raise RuntimeError("no PostgreSQL server binaries in /usr/lib/postgresql/*/bin")
    return Path(found[-1]).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Cluster:
    def __init__(self, root: Path, *, stanza: str = "pitr", archive_timeout: int = 60) -> None:
        self.root = root
        self.stanza = stanza
        self.archive_timeout = archive_timeout
        self.port = free_port()
        self.data = root / "data"
        self.config = root / "pgbackrest.conf"
        self.repo = root / "repo"
        self.bin = server_bin()
        self.os_user = "postgres" if os.geteuid() == 0 else ""
        self.user = self.os_user or pwd.getpwuid(os.geteuid()).pw_name

    # --- running things as the cluster's user -------------------------------------------------

    def run(self, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
        kwargs = {}
        if self.os_user:
            account = pwd.getpwnam(self.os_user)
            kwargs = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
        return subprocess.run(  # noqa: S603 - our tools and arguments
            list(args), capture_output=True, text=True, timeout=timeout, check=check, cwd="/", **kwargs
        )

    def pgbackrest(self, *args: str, timeout: float = 300) -> str:
        return self.run(PGBACKREST, f"--config={self.config}", f"--stanza={self.stanza}", *args, timeout=timeout).stdout

    # --- life ----------------------------------------------------------------------------------

    def start(self) -> Cluster:
        self.root.mkdir(parents=True, exist_ok=True)
        if self.os_user:
            account = pwd.getpwnam(self.os_user)
            os.chown(self.root, account.pw_uid, account.pw_gid)
        self.root.chmod(0o700)
        self.config.write_text(
            "[global]\n"
            f"repo1-path={self.repo}\n"
            f"log-path={self.root / 'log'}\n"
            f"lock-path={self.root / 'lock'}\n"
            f"spool-path={self.root / 'spool'}\n"
            "log-level-console=warn\nlog-level-file=off\n"
            "start-fast=y\ncompress-type=gz\ncompress-level=1\nrepo1-retention-full=4\n"
            f"\n[{self.stanza}]\npg1-path={self.data}\npg1-port={self.port}\npg1-socket-path={self.root}\n"
        )
        self._own(self.config)
        self.run(str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", self.user, "--no-sync")
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(
                f"port = {self.port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{self.root}'\n"
                "wal_level = replica\narchive_mode = on\n"
                f"archive_command = '{PGBACKREST} --config={self.config} --stanza={self.stanza} archive-push %p'\n"
                f"archive_timeout = {self.archive_timeout}\nfsync = off\nmax_wal_senders = 0\n"
            )
        self.run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "postgres.log"), "-w", "start")
        self.pgbackrest("stanza-create")
        return self

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self.run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop", check=False)
        shutil.rmtree(self.root, ignore_errors=True)

    def _own(self, path: Path) -> None:
        if self.os_user:
            account = pwd.getpwnam(self.os_user)
            os.chown(path, account.pw_uid, account.pw_gid)

    # --- the database --------------------------------------------------------------------------

    def url(self, db: str = "postgres") -> str:
        return f"postgres://{self.user}@127.0.0.1:{self.port}/{db}"

    def wait_archived(self, timeout: float = 60) -> None:
        """Until the current WAL is in the repository (pgbackrest check switches and waits)."""
        self.pgbackrest("check", timeout=timeout)


def scratch_postmasters(under: Path | str = "") -> list[int]:
    """Pids of postgres servers whose data directory is a point-in-time scratch (``verify_pitr_``)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        text = " ".join(part.decode(errors="replace") for part in cmdline)
        if "postgres" in text and "verify_pitr_" in text and str(under) in text:
            found.append(int(entry.name))
    return found


def processes_mentioning(text: str) -> list[int]:
    """Pids whose command line contains ``text`` (this process excluded)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(int(entry.name))
    return found


def wait_until(predicate, timeout: float = 30) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return bool(predicate())
