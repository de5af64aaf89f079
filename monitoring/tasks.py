from __future__ import annotations

import logging
import socket

from celery import shared_task

from monitoring.services import heartbeat_record

logger = logging.getLogger(__name__)


@shared_task(name="monitoring.tasks.heartbeat", ignore_result=True)
def heartbeat() -> str:
    """Beat sends this every 30 s; a worker running it proves that beat, broker and worker work."""
    beat = heartbeat_record(name="celery", hostname=socket.gethostname())
    logger.info("heartbeat recorded at %s by %s", beat.last_seen.isoformat(), beat.hostname)
    return beat.last_seen.isoformat()
