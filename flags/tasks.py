from __future__ import annotations

from celery import shared_task


@shared_task(name="flags.tasks.apply_scheduled_changes", ignore_result=True, soft_time_limit=25, time_limit=28)
def apply_scheduled_changes() -> int:
    """Every 30 s (beat): apply the scheduled flag changes whose time has come. Idempotent: each change
    is claimed once, so an overlapping run or a retry applies nothing twice."""
    from flags.schedules import apply_due

    return len(apply_due())
