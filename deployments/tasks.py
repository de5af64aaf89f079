"""Celery tasks of deployments: thin; the runner and the services do the work.

Deployment tasks are acknowledged when they start: a redelivered one could not claim it anyway
(the claim is a conditional update from ``queued``); a lost one is the reaper's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from celery import shared_task

if TYPE_CHECKING:
    from deployments.runner import RunOutcome

RUN_LIMIT_SECONDS = 6 * 3600  # each step has its own timeout; this only bounds a whole pipeline


@shared_task(name="deployments.tasks.run_deployment", ignore_result=True, acks_late=False, time_limit=RUN_LIMIT_SECONDS)
def run_deployment(deployment_id: int) -> RunOutcome:
    from deployments.runner import run

    return run(deployment_id)


@shared_task(
    name="deployments.tasks.continue_rollback", ignore_result=True, acks_late=False, time_limit=RUN_LIMIT_SECONDS
)
def continue_rollback(deployment_id: int, claim: str) -> RunOutcome:
    from deployments.runner import continue_rollback as run_rollback

    return run_rollback(deployment_id, claim)


@shared_task(name="deployments.tasks.reap", ignore_result=True, soft_time_limit=60, time_limit=90)
def reap() -> dict[str, Any]:
    from deployments.services import reap as reap_lost

    return reap_lost()
