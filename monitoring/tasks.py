from __future__ import annotations

import logging
import socket

from celery import shared_task
from django.conf import settings

from monitoring.job_monitors import job_monitors_sweep
from monitoring.services import heartbeat_record, scheduled_checks_run

logger = logging.getLogger(__name__)


@shared_task(name="monitoring.tasks.heartbeat", ignore_result=True)
def heartbeat() -> str:
    """Beat sends this every 30 s; a worker running it proves that beat, broker and worker work."""
    beat = heartbeat_record(name="celery", hostname=socket.gethostname())
    logger.info("heartbeat recorded at %s by %s", beat.last_seen.isoformat(), beat.hostname)
    return beat.last_seen.isoformat()


@shared_task(name="monitoring.tasks.run_scheduled_checks", ignore_result=True, soft_time_limit=50, time_limit=55)
def run_scheduled_checks() -> int:
    """Every minute: run every check, store one row per measurement, then evaluate the alert rules.

    Skipped when the checks ran in the last half interval: a worker stood in for a silent beat, or this
    run waited in the queue and the next one is already close.
    """
    rows = scheduled_checks_run(min_gap_seconds=settings.HEALTH_CHECK_INTERVAL_SECONDS / 2)
    if rows is None:
        logger.info("scheduled checks skipped: they ran less than %s s ago", settings.HEALTH_CHECK_INTERVAL_SECONDS / 2)
        return 0
    return len(rows)


@shared_task(name="monitoring.tasks.refresh_dashboard_charts", ignore_result=True, soft_time_limit=50, time_limit=55)
def refresh_dashboard_charts() -> int:
    """The dashboard's 24 h and 7 d request charts, computed once a minute for every page view."""
    from monitoring.dashboard import charts_refresh

    charts = charts_refresh()
    return len(charts["24h"]) + len(charts["7d"])


@shared_task(name="monitoring.tasks.sweep_job_monitors", ignore_result=True, soft_time_limit=50, time_limit=55)
def sweep_job_monitors() -> int:
    """Every minute: job monitors whose ping is overdue turn late, and past their grace time down."""
    return job_monitors_sweep()


@shared_task(name="monitoring.tasks.scrape_sources", ignore_result=True, soft_time_limit=75, time_limit=90)
def scrape_sources() -> int:
    """Every 5 s: scrape each source whose interval has passed (a source is claimed by one worker only).

    The limits cover a round whose replicas all hang for the longest timeout a source may have (60 s).
    """
    from monitoring.scrape import scrape_due_sources

    return len(scrape_due_sources())
