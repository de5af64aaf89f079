"""Finding the PostgreSQL client tools (pg_dump, pg_restore, pg_amcheck) and their versions."""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess

from django.conf import settings

from backups.engines.errors import ToolMissing


def pg_tool(name: str) -> str:
    """The path of a PostgreSQL client tool: PG_BIN_DIR, then PATH, then Debian's versioned directories."""
    if settings.PG_BIN_DIR:  # the operator chose: only there
        candidates = [os.path.join(settings.PG_BIN_DIR, name)]
    else:
        candidates = [found] if (found := shutil.which(name)) else []
        candidates += sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=_version_key, reverse=True)
    for path in candidates:
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    where = f"in PG_BIN_DIR ({settings.PG_BIN_DIR})" if settings.PG_BIN_DIR else "on PATH"
    raise ToolMissing(f"{name} not found {where}: install the PostgreSQL client tools or set PG_BIN_DIR")


def _version_key(path: str) -> tuple[int, ...]:
    match = re.search(r"/postgresql/(\d+)", path)
    return (int(match.group(1)),) if match else (0,)


def tool_version(path: str) -> str:
    result = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30, check=False)  # noqa: S603
    match = re.search(r"\d+(?:\.\d+)+", result.stdout) if result.returncode == 0 else None
    return match.group(0) if match else "unknown"
