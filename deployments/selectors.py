"""Reads about deployments for the API, the pages and the command."""

from __future__ import annotations

from typing import Any

from django.db.models import Prefetch

from controlplane.drills import DrillPlan
from deployments.models import Deployment, Environment, LogLine, RecoveryPlan, StepRun


def step_run_dict(run: StepRun) -> dict[str, Any]:
    return {
        "index": run.index,
        "phase": run.phase,
        "name": run.name,
        "kind": run.kind,
        "status": run.status,
        "startedAt": run.started_at.isoformat(),
        "finishedAt": run.finished_at.isoformat() if run.finished_at else None,
        "durationMs": run.duration_ms,
        "exitCode": run.exit_code,
        "error": run.error or None,
        "output": run.output,
        "outputTruncated": run.output_truncated,
    }


def log_dict(line: LogLine) -> dict[str, Any]:
    return {
        "id": line.pk,
        "time": line.time.isoformat(),
        "level": line.level,
        "step": line.step,
        "message": line.message,
    }


def deployment_summary(deployment: Deployment) -> dict[str, Any]:
    return {
        "id": deployment.pk,
        "url": deployment.get_absolute_url(),
        "environment": deployment.environment.name,
        "version": deployment.version,
        "type": deployment.type,
        "recoveryType": deployment.recovery_type or None,
        "dryRun": deployment.dry_run,
        "status": deployment.status,
        "requestedBy": deployment.requested_by,
        "createdAt": deployment.created_at.isoformat(),
        "startedAt": deployment.started_at.isoformat() if deployment.started_at else None,
        "finishedAt": deployment.finished_at.isoformat() if deployment.finished_at else None,
        "heartbeatAt": deployment.heartbeat_at.isoformat() if deployment.heartbeat_at else None,
        "error": deployment.error or None,
        "dispatchedAt": deployment.dispatched_at.isoformat() if deployment.dispatched_at else None,
        "dispatchError": deployment.dispatch_error or None,
    }


def deployment_detail(deployment: Deployment, *, after_log_id: int = 0) -> dict[str, Any]:
    body = deployment_summary(deployment)
    body["steps"] = [step_run_dict(run) for run in deployment.step_runs.all()]
    body["plannedSteps"] = [step.get("name") for step in deployment.steps]
    body["log"] = [log_dict(line) for line in deployment.log_lines.filter(id__gt=after_log_id)]
    return body


def with_details(queryset: Any) -> Any:
    return queryset.select_related("environment").prefetch_related(
        Prefetch("step_runs", queryset=StepRun.objects.order_by("started_at", "id"))
    )


def environments_status() -> list[dict[str, Any]]:
    rows = []
    for environment in Environment.objects.select_related("pipeline"):
        active = Deployment.objects.active().select_related("environment").filter(environment=environment).first()
        # A dry run ran nothing: it is never the environment's last deployment nor its release.
        finished = Deployment.objects.select_related("environment").filter(environment=environment, dry_run=False)
        if active is not None:
            finished = finished.exclude(pk=active.pk)
        last = finished.order_by("-created_at").first()
        current = (
            Deployment.objects.filter(environment=environment, status="succeeded", dry_run=False)
            .exclude(type="recovery")
            .order_by("-finished_at")
            .values_list("version", flat=True)
            .first()
        )
        rows.append(
            {
                "environment": environment.name,
                "pipeline": environment.pipeline.name,
                "healthUrl": environment.health_url or None,
                "currentVersion": current,
                "locked": active is not None,
                "active": deployment_summary(active) if active else None,
                "last": deployment_summary(last) if last else None,
            }
        )
    return rows


def latest_deployments(limit: int = 5) -> list[dict[str, Any]]:
    """The newest deployments, each with the step it is on while active (the dashboard)."""
    deployments = list(Deployment.objects.select_related("environment").order_by("-created_at")[:limit])
    active = [d.pk for d in deployments if d.is_active]
    current: dict[int, StepRun] = {}
    if active:
        for run in StepRun.objects.filter(deployment_id__in=active).order_by("started_at", "id"):
            current[run.deployment_id] = run  # the latest started one wins
    return [{"deployment": d, "current_step": current.get(d.pk)} for d in deployments]


def drill_plans() -> list[DrillPlan]:
    """Every recovery plan as backups' drills see it (registered in ``apps.py`` with ``controlplane.drills``)."""
    plans = RecoveryPlan.objects.select_related("environment", "drill_target")
    return [
        DrillPlan(
            name=plan.failure_type,
            environment=plan.environment.name,
            target=plan.drill_target.name if plan.drill_target else "",
            interval_hours=plan.drill_interval_hours,
            smoke_queries=tuple(query for query in plan.smoke_queries if isinstance(query, str)),
        )
        for plan in plans
    ]
