"""Run a command that stops when the process it belongs to is gone: ``make run``'s web, worker and beat.

honcho starts each Procfile line in a session of its own, so a SIGKILL to make or to honcho (or a
crash) reaches none of them, and a worker would go on taking tasks with nobody to stop it. This runs
the command as its child and watches CONTROLPLANE_RUN_PID (make, as the Makefile sets it; else this
process's parent): when that process ends, the command's process group gets SIGTERM, and SIGKILL
after STOP_SECONDS. Stdlib only, and started as a script (``python controlplane/attached.py CMD...``)
so that it loads neither Django nor Celery.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import threading
import time

STOP_SECONDS = 5.0  # what honcho gives a process between its SIGTERM and its SIGKILL


def _wait_for_exit(pid: int) -> None:
    """Returns once ``pid`` has ended (it need not be our parent or child)."""
    try:
        descriptor = os.pidfd_open(pid)  # Linux: woken when it ends, and never confused by pid reuse
    except (AttributeError, OSError):
        while True:  # elsewhere: look twice a second
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            except PermissionError:
                pass  # alive, someone else's
            time.sleep(0.5)
    else:
        select.select([descriptor], [], [])
        os.close(descriptor)


def _stop_group_when_gone(pid: int) -> None:
    _wait_for_exit(pid)
    os.killpg(0, signal.SIGTERM)
    time.sleep(STOP_SECONDS)
    os.killpg(0, signal.SIGKILL)


def main(command: list[str]) -> int:
    if not command:
        sys.exit("usage: attached.py COMMAND [ARGUMENT...]")
    watched = int(os.environ.get("CONTROLPLANE_RUN_PID") or os.getppid())
    # honcho signals the whole process group (the command gets its SIGTERM itself): this process only
    # waits for the command, then exits as it did. A handler, not SIG_IGN, which the command would inherit.
    for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(number, lambda *_: None)
    child = subprocess.Popen(command)  # noqa: S603 - the Procfile's own command line
    threading.Thread(target=_stop_group_when_gone, args=(watched,), daemon=True).start()
    status = child.wait()
    return status if status >= 0 else 128 - status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
