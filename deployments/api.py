"""The deployments part of the operations API (scope ``deploy``)."""

from __future__ import annotations

from typing import Any, Literal

from django.http import HttpRequest, JsonResponse
from django.shortcuts import get_object_or_404
from django.utils import timezone
from ninja import Field, Path, Query, Router, Schema
from pydantic import BaseModel, ConfigDict, field_validator, model_validator
from pydantic_core import PydanticCustomError

from controlplane.api import ApiError
from controlplane.audit import Actor
from controlplane.models import Scope
from controlplane.openapi import Error, token_auth, token_of
from controlplane.readiness import overall, readiness_items
from deployments.models import Deployment
from deployments.selectors import deployment_detail, deployment_summary, environments_status
from deployments.services import (
    deployment_cancel,
    deployment_request,
    pending_detail,
    recovery_run,
    rollback_to_previous,
)

DEPLOY_FIELDS = ("environment", "version", "type")
TYPE_RULE = "deploy or rollback (recovery plans: /api/deployment/recovery/rollback/{type})"

router = Router(tags=["deployments"], auth=token_auth(Scope.DEPLOY))

# The errors every operation here may answer: a token refused, the database out, a bad parameter.
_AUTH_ERRORS: dict[int, Any] = {400: Error, 401: Error, 403: Error, 503: Error}


# --- Schemas ---------------------------------------------------------------------------------------


class DeployIn(BaseModel):
    """``type`` is ``deploy`` (the default) or ``rollback`` (to the previous release; no version)."""

    # Unknown fields are refused by the rule below, in the API's own words (not pydantic's).
    model_config = ConfigDict(extra="allow")

    environment: str | None = Field(None, description="The environment's name.", examples=["demo"])
    version: str | None = Field(None, description="The release to deploy (not for a rollback).", examples=["v42"])
    type: Literal["deploy", "rollback"] = "deploy"

    @model_validator(mode="before")
    @classmethod
    def _known_fields(cls, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(DEPLOY_FIELDS))
            if unknown:
                raise PydanticCustomError(
                    "unknown_field",
                    "unknown field; fields: {fields}",
                    {"field": unknown[0], "fields": ", ".join(DEPLOY_FIELDS)},
                )
        return data

    @field_validator("environment", "version", mode="before")
    @classmethod
    def _text_or_missing(cls, value: Any) -> Any:
        # The service's rule decides: a value that is not text is as good as none ("required").
        return value if isinstance(value, str) else None

    @field_validator("type", mode="before")
    @classmethod
    def _known_type(cls, value: Any) -> Any:
        if value not in ("deploy", "rollback"):
            raise PydanticCustomError("invalid", TYPE_RULE)
        return value


class Locked(Error):
    """409 ``locked``: the environment's active deployment, which holds the lock."""

    active: dict[str, Any] | None = None


class DeploymentOut(Schema):
    id: int
    url: str
    environment: str
    version: str
    type: str
    recoveryType: str | None
    dryRun: bool
    status: str
    requestedBy: str
    createdAt: str
    startedAt: str | None
    finishedAt: str | None
    heartbeatAt: str | None
    error: str | None
    dispatchedAt: str | None
    dispatchError: str | None


class Accepted(DeploymentOut):
    """202: saved, holding the lock; ``dispatched`` is false when the broker could not take it yet."""

    dispatched: bool
    detail: str | None = None


class DeploymentDetail(DeploymentOut):
    steps: list[dict[str, Any]]
    plannedSteps: list[str | None]
    log: list[dict[str, Any]]


class StatusOut(Schema):
    generated_at: str
    environments: list[dict[str, Any]]
    readiness: dict[str, Any]


# --- Operations ------------------------------------------------------------------------------------


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


@router.post(
    "/deploy",
    url_name="api-deploy",
    response={202: Accepted, 409: Locked, 413: Error, 422: Error, **_AUTH_ERRORS},
)
def deploy(request: HttpRequest, payload: DeployIn) -> JsonResponse:
    """Queue a deployment: ``{"environment": "demo", "version": "v42", "type": "deploy"}``."""
    actor = Actor.for_token(token_of(request))
    if payload.type == "rollback":
        deployment = rollback_to_previous(environment=payload.environment, actor=actor)
    else:
        deployment = deployment_request(environment=payload.environment, version=payload.version, actor=actor)
    return _accepted(deployment)


@router.get("/status", url_name="api-deployment-status", response={200: StatusOut, **_AUTH_ERRORS})
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


@router.get(
    "/deployments/{int:deployment_id}",
    url_name="api-deployment",
    response={200: DeploymentDetail, 404: Error, **_AUTH_ERRORS},
)
def deployment(
    request: HttpRequest,
    deployment_id: int,
    after: str = Query("0", description="Only log lines with a greater id (an integer)."),
) -> JsonResponse:
    """One deployment with its step runs and log; ``?after=<log id>`` returns only newer log lines."""
    found = get_object_or_404(Deployment.objects.select_related("environment"), pk=deployment_id)
    try:
        after_id = int(after)
    except ValueError:
        raise ApiError(400, "invalid", "after must be a log line id", field="after") from None
    return JsonResponse(deployment_detail(found, after_log_id=after_id))


@router.post(
    "/deployments/{int:deployment_id}/cancel",
    url_name="api-deployment-cancel",
    response={202: DeploymentOut, 404: Error, 409: Error, **_AUTH_ERRORS},
)
def cancel(request: HttpRequest, deployment_id: int) -> JsonResponse:
    found = get_object_or_404(Deployment.objects.select_related("environment"), pk=deployment_id)
    updated = deployment_cancel(deployment=found, actor=Actor.for_token(token_of(request)))
    return JsonResponse(deployment_summary(updated), status=202)


@router.post(
    "/recovery/rollback/{slug:failure_type}",
    url_name="api-recovery-rollback",
    response={202: Accepted, 404: Error, 409: Locked, 422: Error, **_AUTH_ERRORS},
)
def recovery_rollback(
    request: HttpRequest,
    failure_type: str = Path(..., pattern=r"^[-a-zA-Z0-9_]+$", description="A recovery plan's failure type."),
    dry_run: str = Query("false", description="true or false (1 or 0)."),
) -> JsonResponse:
    """Run the recovery plan for ``failure_type``; ``?dry_run=true`` says what each step would do."""
    dry_run = dry_run.lower()
    if dry_run not in ("true", "false", "1", "0"):
        raise ApiError(422, "invalid", "true or false", field="dry_run")
    deployment = recovery_run(
        failure_type=failure_type, actor=Actor.for_token(token_of(request)), dry_run=dry_run in ("true", "1")
    )
    return _accepted(deployment)
