"""Stand-ins for a silent beat: the scheduled checks and alert rules run on beat's schedule, so when beat
stops, nothing would ever evaluate "beat is down".

Each worker runs a timer thread (started on ``worker_ready``) that every WORKER_HEARTBEAT_SECONDS
records the worker's own heartbeat (what the celery-workers check reads) and, while beat's heartbeat
is late, runs the scheduled checks and the alert rules itself. When no worker is alive either, each web
process does the same from its request-metrics thread, at most once per check interval. Whoever runs
them claims the run in the database first (``checks_run_claim``), so beat, workers and web processes
together never run them more than once per interval.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import close_old_connections
from django.utils import timezone

from monitoring.checks import beat_limits
from monitoring.models import Heartbeat
from monitoring.services import (
    WORKER_PREFIX,
    scheduled_checks_run,
    worker_heartbeat_delete,
    worker_heartbeat_record,
)

logger = logging.getLogger(__name__)


def beat_silent(*, waited_seconds: float) -> bool:
    """Whether beat's heartbeat is late (the check's warn stage). With no heartbeat at all, beat has never
    run on this database: silent once the caller has waited that long itself (a fresh install's beat may
    simply not have started yet)."""
    late_after, _ = beat_limits()
    beat = Heartbeat.objects.filter(name="celery").values_list("last_seen", flat=True).first()
    if beat is None:
        return waited_seconds > late_after
    return (timezone.now() - beat).total_seconds() > late_after


def workers_alive() -> bool:
    since = timezone.now() - timedelta(seconds=settings.WORKER_HEARTBEAT_SECONDS * 3)
    return Heartbeat.objects.filter(name__startswith=WORKER_PREFIX, last_seen__gte=since).exists()


def stand_in(*, waited_seconds: float, only_without_workers: bool = False) -> bool:
    """Run the scheduled checks and the alert rules if beat is silent and nobody ran them in the last
    interval; True when this call ran them."""
    if not beat_silent(waited_seconds=waited_seconds):
        return False
    if only_without_workers and workers_alive():
        return False  # a worker's timer stands in for beat
    rows = scheduled_checks_run(min_gap_seconds=settings.HEALTH_CHECK_INTERVAL_SECONDS)
    if rows is None:
        return False
    logger.warning("beat is silent: ran the scheduled checks in its place (%s results)", len(rows))
    return True


# --- The worker's timer ------------------------------------------------------------------------------


class WorkerTimer:
    """One daemon thread in the worker's main process (not in its pool: the pool may be busy for hours)."""

    def __init__(self, nodename: str) -> None:
        self.nodename = nodename
        self.started = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="monitoring-worker-timer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def tick(self) -> None:
        worker_heartbeat_record(nodename=self.nodename)
        stand_in(waited_seconds=time.monotonic() - self.started)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:  # the database is down, say: try again next time, never end the thread
                logger.exception("worker timer: heartbeat or stand-in checks failed")
            finally:
                close_old_connections()
            self._stop.wait(settings.WORKER_HEARTBEAT_SECONDS)


_timer: WorkerTimer | None = None


def on_worker_ready(sender: Any = None, **kwargs: Any) -> None:
    global _timer
    if _timer is None:
        _timer = WorkerTimer(getattr(sender, "hostname", None) or "celery")
        _timer.start()


def on_worker_shutdown(sender: Any = None, **kwargs: Any) -> None:
    global _timer
    if _timer is None:
        return
    timer, _timer = _timer, None
    timer.stop()
    try:
        worker_heartbeat_delete(nodename=timer.nodename)
    except Exception:  # noqa: BLE001 - stopping anyway; the row then just ages out
        logger.warning("worker timer: could not remove this worker's heartbeat", exc_info=True)
    finally:
        close_old_connections()


def on_beat_init(sender: Any = None, **kwargs: Any) -> None:
    import socket

    from monitoring.services import beat_started_record

    try:
        beat_started_record(hostname=socket.gethostname())
    except Exception:  # noqa: BLE001 - beat still starts; the heartbeat task records it soon
        logger.warning("could not record beat's start", exc_info=True)
    finally:
        close_old_connections()


# --- Web processes ---------------------------------------------------------------------------------------

_web_started = time.monotonic()
_web_last_look = 0.0


def web_look() -> None:
    """From a web process's background thread: cheap unless a check interval has passed since its last
    look; then stands in for beat only if no worker is alive either."""
    global _web_last_look
    now = time.monotonic()
    if now - _web_last_look < settings.HEALTH_CHECK_INTERVAL_SECONDS:
        return
    _web_last_look = now
    try:
        stand_in(waited_seconds=now - _web_started, only_without_workers=True)
    except Exception:  # never stops the thread that called it
        logger.exception("web process: stand-in checks for a silent beat failed")
