from __future__ import annotations

import logging
import socket

from celery import shared_task
from django.conf import settings

from monitoring import alert_tasks  # noqa: F401 - registers the alerting tasks with the worker
from monitoring.alerting import alert_rules_evaluate
from monitoring.services import health_metrics_record, heartbeat_record

logger = logging.getLogger(__name__)


@shared_task(name="monitoring.tasks.heartbeat", ignore_result=True)
def heartbeat() -> str:
    """Beat sends this every 30 s; a worker running it proves that beat, broker and worker work."""
    beat = heartbeat_record(name="celery", hostname=socket.gethostname())
    logger.info("heartbeat recorded at %s by %s", beat.last_seen.isoformat(), beat.hostname)
    return beat.last_seen.isoformat()


SCHEDULED_DEADLINE_SECONDS = 45.0  # under the task's soft time limit


@shared_task(name="monitoring.tasks.run_scheduled_checks", ignore_result=True, soft_time_limit=50, time_limit=55)
def run_scheduled_checks() -> int:
    """Every minute: run every check, store one row per measurement, then evaluate the alert rules."""
    from monitoring.checks import COMPREHENSIVE, registered_checks, run_checks

    checks = registered_checks(COMPREHENSIVE)
    # Not a probe that someone waits for: each endpoint gets its own timeout, within the task's limit.
    longest = max((c.timeout_seconds for c in checks if c.timeout_seconds is not None), default=0.0)
    deadline = min(SCHEDULED_DEADLINE_SECONDS, max(settings.HEALTH_DEADLINE, longest + 0.5))
    rows = health_metrics_record(results=run_checks(checks, deadline_seconds=deadline))
    # Right after the rows it reads are stored; a separate schedule would count a minute twice.
    alert_rules_evaluate()
    return len(rows)


@shared_task(name="monitoring.tasks.refresh_dashboard_charts", ignore_result=True, soft_time_limit=50, time_limit=55)
def refresh_dashboard_charts() -> int:
    """The dashboard's 24 h and 7 d request charts, computed once a minute for every page view."""
    from monitoring.dashboard import charts_refresh

    charts = charts_refresh()
    return len(charts["24h"]) + len(charts["7d"])
