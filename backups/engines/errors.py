"""The failures of a backup, a verification or a restore: messages safe to show and store."""

from __future__ import annotations


class BackupError(Exception):
    """A backup, verification or restore that cannot go on; the message is safe to show and store."""


class ToolMissing(BackupError):
    pass


class SourceUnreachable(BackupError):
    pass


class ScratchIsSource(BackupError):
    """A scratch or restore target that is (or cannot be told apart from) a database that must not be written."""


class CheckFailed(BackupError):
    def __init__(self, check: str, message: str) -> None:
        super().__init__(f"{check}: {message}")
        self.check = check


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
