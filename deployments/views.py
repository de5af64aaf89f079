"""Deployment pages: the list with a Deploy form, a deployment's step timeline and live log, recovery plans."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from controlplane.access import operator_page
from controlplane.audit import Actor
from deployments.models import Deployment, Environment, RecoveryPlan
from deployments.selectors import environments_status
from deployments.services import (
    DeploymentLocked,
    InvalidDeployment,
    NotCancellable,
    deployment_cancel,
    deployment_request,
    recovery_run,
    rollback_to_previous,
)

VIEW_PERMISSION = "deployments.view_deployment"
RUN_PERMISSION = "deployments.add_deployment"
PAGE_SIZE = 50


def _require_operator(request: HttpRequest) -> None:
    if not request.user.has_perm(RUN_PERMISSION):
        raise PermissionDenied("deploying needs the deployments.add_deployment permission")


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
        messages.error(request, str(exc))
        return redirect("deployments:detail", deployment_id=exc.active.pk)
    return redirect("deployments:detail", deployment_id=deployment.pk)


@operator_page(VIEW_PERMISSION)
@require_POST
def roll_back(request: HttpRequest, name: str) -> HttpResponse:
    _require_operator(request)
    environment = get_object_or_404(Environment, name=name)
    try:
        deployment = rollback_to_previous(environment=environment.name, actor=Actor.for_user(request.user))
    except (InvalidDeployment, DeploymentLocked) as exc:
        messages.error(request, str(exc))
        return redirect("deployments:index")
    return redirect("deployments:detail", deployment_id=deployment.pk)


@operator_page(VIEW_PERMISSION)
@require_POST
def cancel(request: HttpRequest, deployment_id: int) -> HttpResponse:
    _require_operator(request)
    deployment = get_object_or_404(Deployment, pk=deployment_id)
    try:
        deployment_cancel(deployment=deployment, actor=Actor.for_user(request.user))
    except NotCancellable as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Cancel requested for deployment #{deployment.pk}.")
    return redirect("deployments:detail", deployment_id=deployment.pk)


@operator_page(VIEW_PERMISSION)
@require_POST
def run_plan(request: HttpRequest, failure_type: str) -> HttpResponse:
    _require_operator(request)
    dry_run = request.POST.get("dry_run") == "1"
    try:
        deployment = recovery_run(failure_type=failure_type, actor=Actor.for_user(request.user), dry_run=dry_run)
    except (InvalidDeployment, DeploymentLocked) as exc:
        messages.error(request, str(exc))
        return redirect("deployments:index")
    return redirect("deployments:detail", deployment_id=deployment.pk)
