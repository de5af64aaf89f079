"""The deployments part of the operations API (scope ``deploy``)."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.shortcuts import get_object_or_404
from django.utils import timezone

from controlplane.api import ApiError, api_view, json_body
from controlplane.audit import Actor
from controlplane.models import Scope
from controlplane.readiness import overall, readiness_items
from deployments.models import Deployment
from deployments.selectors import deployment_detail, deployment_summary, environments_status
from deployments.services import (
    DeploymentLocked,
    InvalidDeployment,
    NotCancellable,
    deployment_cancel,
    deployment_request,
    pending_detail,
    recovery_run,
    rollback_to_previous,
)

DEPLOY_FIELDS = ("environment", "version", "type")


def _accepted(deployment: Deployment) -> JsonResponse:
    """202 either way: the deployment is saved, holds the lock and will run. ``dispatched`` is false
    when the broker could not take its task now; ``detail`` says what happens then."""
    body = deployment_summary(deployment)
    body["dispatched"] = not deployment.dispatch_pending
    if deployment.dispatch_pending:
        body["detail"] = f"accepted, but not sent to a worker yet ({deployment.dispatch_error}): {pending_detail()}"
    response = JsonResponse(body, status=202)
    response["Location"] = deployment.get_absolute_url()
    return response


def _locked(error: DeploymentLocked) -> ApiError:
    return ApiError(409, "locked", str(error), active={"id": error.active.pk, "url": error.active.get_absolute_url()})


@api_view(scope=Scope.DEPLOY, methods=("POST",))
def deploy(request: HttpRequest) -> JsonResponse:
    """Queue a deployment: ``{"environment": "demo", "version": "v42", "type": "deploy"}``.

    ``type`` is ``deploy`` (the default) or ``rollback`` (to the previous release; no version needed).
    """
    body = json_body(request)
    unknown = sorted(set(body) - set(DEPLOY_FIELDS))
    if unknown:
        raise ApiError(422, "invalid", f"unknown field; fields: {', '.join(DEPLOY_FIELDS)}", field=unknown[0])
    kind = body.get("type", "deploy")
    actor = Actor.from_request(request)
    try:
        if kind == "rollback":
            deployment = rollback_to_previous(environment=body.get("environment"), actor=actor)
        elif kind == "deploy":
            deployment = deployment_request(
                environment=body.get("environment"), version=body.get("version"), actor=actor
            )
        else:
            raise InvalidDeployment(
                "type", "deploy or rollback (recovery plans: /api/deployment/recovery/rollback/{type})"
            )
    except InvalidDeployment as error:
        raise ApiError(422, "invalid", error.message, field=error.field) from None
    except DeploymentLocked as error:
        raise _locked(error) from None
    return _accepted(deployment)


@api_view(scope=Scope.DEPLOY)
def status(request: HttpRequest) -> JsonResponse:
    """Per environment: the active and the last deployment; and the control plane's readiness report."""
    items = readiness_items()
    return JsonResponse(
        {
            "generated_at": timezone.now().isoformat(),
            "environments": environments_status(),
            "readiness": {"status": overall(items), "items": [item.as_dict() for item in items]},
        }
    )


@api_view(scope=Scope.DEPLOY)
def deployment(request: HttpRequest, deployment_id: int) -> JsonResponse:
    """One deployment with its step runs and log; ``?after=<log id>`` returns only newer log lines."""
    found = get_object_or_404(Deployment.objects.select_related("environment"), pk=deployment_id)
    try:
        after = int(request.GET.get("after", "0"))
    except ValueError:
        raise ApiError(400, "invalid", "after must be a log line id", field="after") from None
    return JsonResponse(deployment_detail(found, after_log_id=after))


@api_view(scope=Scope.DEPLOY, methods=("POST",))
def cancel(request: HttpRequest, deployment_id: int) -> JsonResponse:
    found = get_object_or_404(Deployment.objects.select_related("environment"), pk=deployment_id)
    try:
        updated = deployment_cancel(deployment=found, actor=Actor.from_request(request))
    except NotCancellable as error:
        raise ApiError(409, "not_cancellable", str(error)) from None
    return JsonResponse(deployment_summary(updated), status=202)


@api_view(scope=Scope.DEPLOY, methods=("POST",))
def recovery_rollback(request: HttpRequest, failure_type: str) -> JsonResponse:
    """Run the recovery plan for ``failure_type``; ``?dry_run=true`` says what each step would do."""
    dry_run = request.GET.get("dry_run", "false").lower()
    if dry_run not in ("true", "false", "1", "0"):
        raise ApiError(422, "invalid", "true or false", field="dry_run")
    try:
        deployment = recovery_run(
            failure_type=failure_type, actor=Actor.from_request(request), dry_run=dry_run in ("true", "1")
        )
    except InvalidDeployment as error:
        status = 404 if error.field == "type" else 422
        raise ApiError(status, "not_found" if status == 404 else "invalid", error.message, field=error.field) from None
    except DeploymentLocked as error:
        raise _locked(error) from None
    return _accepted(deployment)
