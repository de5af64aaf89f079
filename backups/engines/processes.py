"""Running a client tool as a child process: a deadline, stderr drained aside, a failure named by the tool."""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
from collections.abc import Callable
from typing import IO

from backups.engines.errors import BackupError


def tail(text: str, lines: int = 6) -> str:
    kept = [line for line in text.strip().splitlines() if line.strip()]
    return "\n".join(kept[-lines:])[-2000:]


class Supervised:
    """A child process with a deadline and its stderr drained in the background."""

    def __init__(self, process: subprocess.Popen, timeout: float) -> None:
        self.process = process
        self.timed_out = False
        self.error: str | None = None
        self._stderr: list[bytes] = []
        self._timer = threading.Timer(timeout, self._expire)
        self._timer.daemon = True
        self._drain = threading.Thread(target=self._read_stderr, daemon=True)

    def __enter__(self) -> Supervised:
        self._timer.start()
        self._drain.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()
        if self.process.poll() is None:
            self.kill()
        self.process.wait()
        self._drain.join(timeout=5)
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()

    def _expire(self) -> None:
        self.timed_out = True
        self.kill()

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        while chunk := self.process.stderr.read(65536):
            if sum(map(len, self._stderr)) < 1_000_000:
                self._stderr.append(chunk)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()

    def wait(self) -> int:
        returncode = self.process.wait()
        self._drain.join(timeout=5)
        return returncode

    @property
    def stderr(self) -> str:
        return b"".join(self._stderr).decode("utf-8", "replace")


def run_tool(
    args: list[str],
    *,
    env: dict[str, str],
    timeout: float,
    stdout: IO[bytes] | None = None,
    feed: Callable[[IO[bytes]], object] | None = None,
) -> str:
    """Run a client tool to the end; returns its stderr. Raises BackupError naming the tool on failure.

    ``feed(stdin)``, when given, writes the tool's standard input from a thread of its own (a decrypted
    stream); the tool's failure to read it all, or the feed's own failure, fails the run. The feed's
    error wins when both failed: it is the cause (a wrong key, a truncated file), the tool's the symptom.
    """
    tool = os.path.basename(args[0])
    process = subprocess.Popen(  # noqa: S603 - fixed tool path, arguments are ours
        args,
        stdin=subprocess.PIPE if feed is not None else None,
        stdout=stdout if stdout is not None else subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        umask=0o077,
    )
    feed_error: list[BaseException] = []
    feeder = None
    if feed is not None:

        def write_input() -> None:
            assert process.stdin is not None
            try:
                feed(process.stdin)
            except BrokenPipeError:
                pass  # the tool stopped reading: its own exit status says why
            except BaseException as exc:  # noqa: BLE001 - handed to the caller below
                feed_error.append(exc)
            finally:
                with contextlib.suppress(OSError):
                    process.stdin.close()

        feeder = threading.Thread(target=write_input, name=f"{tool}-stdin", daemon=True)
    with Supervised(process, timeout) as supervised:
        if feeder is not None:
            feeder.start()
        output = b""
        if stdout is None:
            assert process.stdout is not None
            output = process.stdout.read()
        returncode = supervised.wait()
        if feeder is not None:
            feeder.join()
    if supervised.timed_out:
        raise BackupError(f"{tool} did not finish within {timeout:g} s and was stopped")
    if feed_error:
        error = feed_error[0]
        if isinstance(error, BackupError):
            raise error
        raise BackupError(f"feeding {tool} failed: {error}")
    if returncode != 0:
        raise BackupError(f"{tool} failed (exit {returncode}): {tail(supervised.stderr) or 'no message'}")
    return output.decode("utf-8", "replace") if stdout is None else supervised.stderr
