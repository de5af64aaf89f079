"""Reads about deployments for the API, the pages and the command."""

from __future__ import annotations

from typing import Any

from django.db.models import Prefetch

from controlplane.drills import DrillPlan
from deployments.models import AnalysisMeasurement, Deployment, Environment, LogLine, RecoveryPlan, StepRun


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
        # The deploy lock's holder: a guarded rollout holds its flag's lock, not the environment's.
        active = (
            Deployment.objects.active()
            .holding_environment_lock()
            .select_related("environment")
            .filter(environment=environment)
            .first()
        )
        # A dry run ran nothing, a guarded rollout deployed nothing: never the environment's last deployment.
        finished = Deployment.objects.select_related("environment").filter(
            environment=environment, dry_run=False, flag=""
        )
        if active is not None:
            finished = finished.exclude(pk=active.pk)
        last = finished.order_by("-created_at").first()
        current = (
            Deployment.objects.filter(environment=environment, status="succeeded", dry_run=False)
            .exclude(type__in=["recovery", "guarded"])
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


def guarded_rollouts_of(flag: str) -> list[dict[str, Any]]:
    """A flag's guarded rollouts, one entry per environment that runs pipelines: the active plan there (or
    the latest), its steps (percent, status) and its guards' latest values (the flag page's section)."""
    from deployments.guarded import default_plan

    rows = []
    for environment in Environment.objects.select_related("environment").order_by("environment__position", "name"):
        plan = (
            Deployment.objects.filter(environment=environment, flag=flag, type="guarded")
            .order_by("-created_at", "-id")
            .first()
        )
        rows.append(
            {
                "environment": environment.name,
                "production": environment.environment.production,
                "defaults": default_plan(environment.environment.production),
                "plan": plan,
                "steps": _plan_steps(plan) if plan else [],
                "guards": _latest_guards(plan) if plan else [],
            }
        )
    return rows


def _plan_steps(plan: Deployment) -> list[dict[str, Any]]:
    """Each percentage of the plan with where it is: done, holding (with its rounds so far), failed, to come."""
    runs = {(run.phase, run.index): run for run in plan.step_runs.all()}
    steps = []
    for index in range(0, len(plan.steps), 2):
        raise_run, hold_run = runs.get(("forward", index)), runs.get(("forward", index + 1))
        percent = plan.steps[index].get("set", {}).get(plan.flag, {}).get("rollout_percent")
        status = "to come"
        for run in (raise_run, hold_run):
            if run is not None:
                status = {"running": "holding" if run is hold_run else "raising"}.get(run.status, run.status)
        if status == "succeeded" and hold_run is None:
            status = "raised"
        steps.append({"percent": percent, "status": status, "hold": plan.steps[index + 1].get("duration")})
    return steps


def _latest_guards(plan: Deployment) -> list[dict[str, Any]]:
    """The newest measurement of each guard in the plan's latest hold."""
    hold = plan.step_runs.filter(kind="analysis", phase="forward").order_by("-index").first()
    if hold is None:
        return []
    latest: dict[int, AnalysisMeasurement] = {}
    for measurement in AnalysisMeasurement.objects.filter(step_run=hold).order_by("at", "id"):
        latest[measurement.condition] = measurement
    return [
        {
            "label": m.label,
            "value": m.value,
            "threshold": m.threshold,
            "verdict": m.verdict,
            "detail": m.detail,
            "hold": hold.name,
        }
        for _, m in sorted(latest.items())
    ]
