"""How far a long run is: a backup, an upload, a verification, a drill.

The code doing the work reports into a ``Progress`` held in memory (``report``: cheap, any number of
times per second, from the thread doing the work or one it passes the object to). Nothing is written
then: the run's heartbeat thread (``backups.services._heartbeat``) writes a snapshot into the row's
``progress`` JSON field at most once per ``BACKUP_PROGRESS_SECONDS``, and only when it changed, and
hands the same snapshot to whoever watches this process (``watching``: the ``backup`` and
``verify_backup`` commands' progress line). Pages read the row.

For code that does not hold the object (an upload to another storage, written elsewhere): call
``report(phase="upload s3", done=sent, total=size, unit="bytes")`` from inside the run; it reports into
the run's progress, or does nothing outside one. A thread of one's own gets ``current()`` passed to it
(a context variable does not follow into new threads).

The time left is estimated from the previous run of the same target (``expected_ms``): what that run
took, less the time spent so far. Without a previous run it is extrapolated from the fraction done.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

_current: contextvars.ContextVar[Progress | None] = contextvars.ContextVar("backups_progress", default=None)
_watchers: list[Callable[[Progress, dict[str, Any]], None]] = []
_watchers_lock = threading.Lock()


class Progress:
    """One run's progress. ``label`` names it for people ("backup #12 of crm")."""

    def __init__(self, label: str, *, expected_ms: int | None = None) -> None:
        self.label = label
        self.expected_ms = expected_ms
        self._start = time.monotonic()
        self._lock = threading.Lock()
        self._phase = "starting"
        self._done: int | None = None
        self._total: int | None = None
        self._unit = ""
        self._version = 0

    def report(
        self, *, phase: str | None = None, done: int | None = None, total: int | None = None, unit: str | None = None
    ) -> None:
        """Say where the run is. A new ``phase`` forgets the previous phase's counts unless given again."""
        with self._lock:
            if phase is not None and phase != self._phase:
                self._phase, self._done, self._total, self._unit = phase, None, None, ""
            if done is not None:
                self._done = done
            if total is not None:
                self._total = total
            if unit is not None:
                self._unit = unit
            self._version += 1

    def advance(self, amount: int) -> None:
        """Add ``amount`` to the phase's count (bytes written, tables done)."""
        with self._lock:
            self._done = (self._done or 0) + amount
            self._version += 1

    @property
    def version(self) -> int:
        """Grows with every report: the heartbeat writes only when it moved."""
        return self._version

    def snapshot(self) -> dict[str, Any]:
        """What the row keeps and pages show (JSON): phase, counts, elapsed and estimated time left."""
        with self._lock:
            phase, done, total, unit = self._phase, self._done, self._total, self._unit
        elapsed = int((time.monotonic() - self._start) * 1000)
        fraction = None
        if done is not None and total:
            fraction = min(done / total, 1.0)
        left = None
        if self.expected_ms is not None:
            left = max(self.expected_ms - elapsed, 0)
        elif fraction:
            left = int(elapsed * (1 - fraction) / fraction)
        return {
            "phase": phase,
            "done": done,
            "total": total,
            "unit": unit,
            "percent": None if fraction is None else round(fraction * 100, 1),
            "elapsedMs": elapsed,
            "leftMs": left,
        }


def current() -> Progress | None:
    """The progress of the run this code is part of, if any."""
    return _current.get()


def report(
    *, phase: str | None = None, done: int | None = None, total: int | None = None, unit: str | None = None
) -> None:
    """Report into the current run's progress (see the module's docstring); nothing outside a run."""
    progress = _current.get()
    if progress is not None:
        progress.report(phase=phase, done=done, total=total, unit=unit)


@contextlib.contextmanager
def running(progress: Progress) -> Iterator[Progress]:
    """Make ``progress`` the current one for the code inside (``report`` finds it)."""
    token = _current.set(progress)
    try:
        yield progress
    finally:
        _current.reset(token)


@contextlib.contextmanager
def watching(callback: Callable[[Progress, dict[str, Any]], None]) -> Iterator[None]:
    """Call ``callback(progress, snapshot)`` at each heartbeat tick of the runs of this process."""
    with _watchers_lock:
        _watchers.append(callback)
    try:
        yield
    finally:
        with _watchers_lock:
            _watchers.remove(callback)


def tell_watchers(progress: Progress, snapshot: dict[str, Any]) -> None:
    with _watchers_lock:
        watchers = list(_watchers)
    for callback in watchers:
        with contextlib.suppress(Exception):  # a broken progress line never fails the run
            callback(progress, snapshot)


def line(progress: Progress, snapshot: dict[str, Any]) -> str:
    """The snapshot in words: "backup #3 of crm: dump 12.0 MiB of 40.0 MiB (30%), 4 s, about 9 s left"."""
    return f"{progress.label}: {describe(snapshot)}"


def describe(snapshot: dict[str, Any]) -> str:
    """A stored snapshot in words (without the run's name); "starting" before the first one is written."""
    if not snapshot:
        return "starting"
    parts = [str(snapshot.get("phase") or "working")]
    done, total, unit = snapshot.get("done"), snapshot.get("total"), snapshot.get("unit") or ""
    if done is not None:
        if total and unit != "bytes":
            amount = f"{done} of {total} {unit}".rstrip()  # "3 of 12 tables"
        else:
            amount = _amount(done, unit) + (f" of {_amount(total, unit)}" if total else "")
        if total:
            if snapshot.get("percent") is not None:
                amount += f" ({snapshot['percent']:.0f}%)"
        parts.append(" " + amount)
    parts.append(f", {_duration(int(snapshot.get('elapsedMs') or 0))} elapsed")
    left = snapshot.get("leftMs")
    if left is not None:
        parts.append(f", about {_duration(left)} left" if left else ", should end any moment")
    return "".join(parts)


def _amount(value: int, unit: str) -> str:
    if unit == "bytes":
        size = float(value)
        for name in ("B", "KiB", "MiB", "GiB"):
            if size < 1024 or name == "GiB":
                return f"{size:.0f} {name}" if name == "B" else f"{size:.1f} {name}"
            size /= 1024
    return f"{value} {unit}".strip()


def _duration(ms: int) -> str:
    seconds = ms // 1000
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


class ProgressLine:
    """A command's progress line: rewritten in place on a terminal, a line every ``every`` seconds otherwise."""

    def __init__(self, stream: Any, *, tty: bool, every: float) -> None:
        self.stream = stream
        self.tty = tty
        self.every = every
        self._last = 0.0
        self._width = 0
        self._lock = threading.Lock()

    def __call__(self, progress: Progress, snapshot: dict[str, Any]) -> None:
        text = line(progress, snapshot)
        with self._lock:
            if self.tty:
                self.stream.write("\r" + text.ljust(self._width), ending="")
                self._width = len(text)
                self.stream.flush()
                return
            now = time.monotonic()
            if now - self._last >= self.every:
                self._last = now
                self.stream.write(text)

    def end(self) -> None:
        """Leave the terminal on a fresh line before the command's own output."""
        with self._lock:
            if self.tty and self._width:
                self.stream.write("\r" + " " * self._width + "\r", ending="")
                self._width = 0
