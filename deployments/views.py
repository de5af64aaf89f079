"""Deployment pages: the list with a Deploy form, a deployment's step timeline and live log, recovery plans."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from alerting.selectors import alert_get
from controlplane.access import operator_page
from controlplane.audit import Actor
from controlplane.errors import ControlPlaneError
from controlplane.forms import report
from deployments.analysis_charts import analysis_charts
from deployments.models import Deployment, DeploymentStatus, Environment, RecoveryPlan, StepStatus
from deployments.runner import dry_run_lines
from deployments.selectors import environments_status
from deployments.services import (
    DeploymentLocked,
    InvalidDeployment,
    NotCancellable,
    deployment_cancel,
    deployment_request,
    recovery_run,
    recovery_version,
    rollback_to_previous,
    rollback_versions,
)
from deployments.steps import InvalidStep, validate_steps

VIEW_PERMISSION = "deployments.view_deployment"
RUN_PERMISSION = "deployments.add_deployment"
PAGE_SIZE = 50


def _require_operator(request: HttpRequest) -> None:
    if not request.user.has_perm(RUN_PERMISSION):
        raise PermissionDenied("deploying needs the deployments.add_deployment permission")


def _confirmed(request: HttpRequest) -> bool:
    """Cancel, roll back and run a plan act only on a POST carrying ``confirm=yes``; the first POST (the
    button) gets a page that says what will happen and posts again with it. No JavaScript needed."""
    return request.POST.get("confirm") == "yes"


def _confirm_page(request: HttpRequest, *, question: str, details: list[str], button: str, back: str) -> HttpResponse:
    context = {"question": question, "details": details, "button": button, "back": back, "action": request.path}
    return render(request, "deployments/confirm.html", context)


@operator_page(VIEW_PERMISSION)
def index(request: HttpRequest) -> HttpResponse:
    return _index_page(request)


def _index_page(request: HttpRequest, *, form: dict | None = None, status: int = 200) -> HttpResponse:
    """The list page; ``form`` is a refused Deploy form (what was entered and the error on its field)."""
    context = {
        "environments": environments_status(),
        "deployments": Deployment.objects.select_related("environment")[:PAGE_SIZE],
        "plans": RecoveryPlan.objects.select_related("environment"),
        "can_run": request.user.has_perm(RUN_PERMISSION),
        "form": form or {},
    }
    return render(request, "deployments/index.html", context, status=status)


@operator_page(VIEW_PERMISSION)
def detail(request: HttpRequest, deployment_id: int) -> HttpResponse:
    deployment = get_object_or_404(Deployment.objects.select_related("environment"), pk=deployment_id)
    return render(request, "deployments/detail.html", _detail_context(request, deployment))


@operator_page(VIEW_PERMISSION)
def live(request: HttpRequest, deployment_id: int) -> HttpResponse:
    """The changing part of the detail page; the page's script fetches it every second while active."""
    deployment = get_object_or_404(Deployment.objects.select_related("environment"), pk=deployment_id)
    return render(request, "deployments/_live.html", _detail_context(request, deployment))


def _detail_context(request: HttpRequest, deployment: Deployment) -> dict:
    runs = list(deployment.step_runs.order_by("started_at", "id"))
    started = {(run.phase, run.index) for run in runs}
    pending = [
        step["name"] for index, step in enumerate(deployment.steps) if ("forward", index) not in started
    ] if deployment.is_active else []  # fmt: skip
    return {
        "deployment": deployment,
        "runs": runs,
        "pending": pending,
        "log": list(deployment.log_lines.order_by("-id")[:200])[::-1],
        "analyses": analysis_charts(runs, deployment.steps),
        "can_run": request.user.has_perm(RUN_PERMISSION),
    }


@operator_page(VIEW_PERMISSION)
@require_POST
def deploy(request: HttpRequest) -> HttpResponse:
    _require_operator(request)
    environment, version = request.POST.get("environment", ""), request.POST.get("version", "")
    try:
        deployment = deployment_request(environment=environment, version=version, actor=Actor.for_user(request.user))
    except InvalidDeployment as exc:
        # The form again, as entered, with the error on its field (422 like the API's answer).
        form = {"environment": environment, "version": version, "field": exc.field, "error": exc.message}
        return _index_page(request, form=form, status=422)
    except DeploymentLocked as exc:
        report(request, exc)
        return redirect("deployments:detail", deployment_id=exc.active.pk)
    return redirect("deployments:detail", deployment_id=deployment.pk)


@operator_page(VIEW_PERMISSION)
@require_POST
def roll_back(request: HttpRequest, name: str) -> HttpResponse:
    _require_operator(request)
    environment = get_object_or_404(Environment, name=name)
    if not _confirmed(request):
        try:
            current, previous = rollback_versions(environment.name)
        except InvalidDeployment as exc:
            report(request, exc)
            return redirect("deployments:index")
        return _confirm_page(
            request,
            question=f"Roll back {environment.name} from {current} to {previous}?",
            details=[f"A new deployment of {previous} runs the {environment.name} pipeline; {current} is replaced."],
            button=f"Roll back to {previous}",
            back=reverse("deployments:index"),
        )
    try:
        deployment = rollback_to_previous(environment=environment.name, actor=Actor.for_user(request.user))
    except ControlPlaneError as exc:  # nothing to roll back to, or locked
        report(request, exc)
        return redirect("deployments:index")
    return redirect("deployments:detail", deployment_id=deployment.pk)


@operator_page(VIEW_PERMISSION)
@require_POST
def cancel(request: HttpRequest, deployment_id: int) -> HttpResponse:
    _require_operator(request)
    deployment = get_object_or_404(Deployment.objects.select_related("environment"), pk=deployment_id)
    if not _confirmed(request) and deployment.is_active:
        return _confirm_page(
            request,
            question=f"Cancel deployment #{deployment.pk} of {deployment.environment.name} "
            f"({deployment.version}, {_where(deployment)})?",
            details=[
                "A queued deployment ends at once. A running one has its step stopped, then its finished steps "
                "are rolled back."
            ],
            button=f"Cancel deployment #{deployment.pk}",
            back=deployment.get_absolute_url(),
        )
    try:
        deployment_cancel(deployment=deployment, actor=Actor.for_user(request.user))
    except NotCancellable as exc:
        report(request, exc)
    else:
        messages.success(request, f"Cancel requested for deployment #{deployment.pk}.")
    return redirect("deployments:detail", deployment_id=deployment.pk)


@operator_page(VIEW_PERMISSION)
def plan_page(request: HttpRequest, failure_type: str) -> HttpResponse:
    """A recovery plan's page, where an alert's "run <plan>" leads: its runbook and what a dry run would do,
    step by step, then the button that runs it (a POST with the confirmation, to ``run_plan``)."""
    plan = get_object_or_404(RecoveryPlan.objects.select_related("environment"), failure_type=failure_type)
    problem = ""
    lines: list[tuple[str, str]] = []
    try:
        validate_steps(plan.steps)
    except InvalidStep as exc:
        problem = f"{exc.field}: {exc.message}"
    else:
        lines = dry_run_lines(plan.steps, version=recovery_version(plan), environment=plan.environment)
    alert = None
    if request.GET.get("alert", "").isdigit():
        alert = alert_get(int(request.GET["alert"]))
    context = {
        "plan": plan,
        "dry_run": lines,
        "problem": problem,
        "alert": alert,
        "can_run": request.user.has_perm(RUN_PERMISSION),
    }
    return render(request, "deployments/plan.html", context)


@operator_page(VIEW_PERMISSION)
@require_POST
def run_plan(request: HttpRequest, failure_type: str) -> HttpResponse:
    _require_operator(request)
    dry_run = request.POST.get("dry_run") == "1"
    if not dry_run and not _confirmed(request):  # a dry run runs nothing: no question
        plan = get_object_or_404(RecoveryPlan.objects.select_related("environment"), failure_type=failure_type)
        steps = [f"{step.get('name', '?')} ({step.get('kind', '?')})" for step in plan.steps if isinstance(step, dict)]
        return _confirm_page(
            request,
            question=f"Run recovery plan {plan.failure_type} on {plan.environment.name}?",
            details=[f"Steps, in order: {', '.join(steps) or 'none'}."],
            button=f"Run {plan.failure_type}",
            back=reverse("deployments:index") + f"#plan-{plan.failure_type}",
        )
    try:
        deployment = recovery_run(failure_type=failure_type, actor=Actor.for_user(request.user), dry_run=dry_run)
    except ControlPlaneError as exc:  # no such plan, steps that cannot run, or locked
        report(request, exc)
        return redirect("deployments:index")
    return redirect("deployments:detail", deployment_id=deployment.pk)


def _where(deployment: Deployment) -> str:
    """Where a deployment is, for the cancel question: "running step 'migrate'", "queued"."""
    if deployment.status != DeploymentStatus.RUNNING:
        return deployment.get_status_display().lower()
    step = deployment.step_runs.filter(status=StepStatus.RUNNING).order_by("-started_at", "-id").first()
    return f"running step '{step.name}'" if step else "running"
