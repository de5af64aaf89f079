"""The operator's first password, kept in a file under the data directory until it is changed.

``ensure_operator`` prints a generated password once, and ``make run`` then prints some ninety lines
within seconds: the password would scroll away. It is also written to ``VAR_DIR/operator-password.txt``
(mode 0600, the owner only), named in the output, and a worker of ``make run`` names the file again once
it is ready (the last of the start-up lines). ``ensure_operator`` removes the file once the password
it holds no longer signs in, so it never outlives the password.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from django.conf import settings

logger = logging.getLogger(__name__)
FILE_NAME = "operator-password.txt"


def path() -> Path:
    return Path(settings.VAR_DIR) / FILE_NAME


def shown(file: Path) -> str:
    """The path as an operator types it: relative to the working directory when it is under it."""
    try:
        return str(file.relative_to(Path.cwd()))
    except ValueError:
        return str(file)


def write(username: str, password: str) -> Path:
    """Write the file readable by its owner only, from its first byte (never a moment world-readable)."""
    file = path()
    temporary = file.with_name(f".{FILE_NAME}.{os.getpid()}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(descriptor, 0o600)  # an umask only removes bits, but a leftover file keeps its own mode
        os.write(descriptor, f"user: {username}\npassword: {password}\n".encode())
    finally:
        os.close(descriptor)
    os.replace(temporary, file)
    return file


def read() -> tuple[str, str] | None:
    """(user, password) from the file, or None when there is none (or it is not one we wrote)."""
    try:
        text = path().read_text()
    except (FileNotFoundError, UnicodeDecodeError):
        return None
    fields = dict(line.split(": ", 1) for line in text.splitlines() if ": " in line)
    if "user" not in fields or "password" not in fields:
        return None
    return fields["user"], fields["password"]


def remove() -> None:
    path().unlink(missing_ok=True)


def remind(sender: Any = None, **kwargs: Any) -> None:
    """Celery's worker_ready: name the file (never the password) while it is there."""
    stored = read()
    if stored is not None:
        logger.info("Operator login: user '%s', password in %s", stored[0], shown(path()))
