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
from controlplane.openapi import Error, refuse_unknown_fields, token_auth, token_of
from controlplane.readiness import overall, readiness_items
from deployments.guarded import (
    DEFAULT_PERCENTS,
    guarded_rollout_abort,
    guarded_rollout_pause,
    guarded_rollout_resume,
    guarded_rollout_skip,
    guarded_rollout_start,
)
from deployments.models import Deployment, Environment
from deployments.selectors import deployment_detail, deployment_summary, environments_status
from deployments.services import (
    deployment_cancel,
    deployment_request,
    pending_detail,
    recovery_run,
    rollback_to_previous,
)

DEPLOY_FIELDS = ("environment", "version", "type")
GUARDED_FIELDS = ("flag", "environment", "percents", "hold", "confirm")
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
        return refuse_unknown_fields(data, DEPLOY_FIELDS)

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


class GuardedIn(BaseModel):
    """A guarded rollout of ``flag`` in ``environment``; ``percents`` and ``hold`` default to the plan's
    (1, 5, 25, 50, 100 %; ten minutes a step in a production environment, ten seconds elsewhere). In a
    production environment ``confirm`` must be true, as the pages ask for a confirmation."""

    model_config = ConfigDict(extra="allow")

    flag: str = Field(..., description="The flag's name.", examples=["checkout_v2"])
    environment: str = Field(..., description="The environment's name.", examples=["production"])
    percents: list[int] | None = Field(
        None, description="Rising rollout percentages, 1 to 100 (at most 20).", examples=[[1, 5, 25, 50, 100]]
    )
    hold: float | None = Field(None, description="Seconds held at each step while the guards are measured.")
    confirm: bool = Field(False, description="Required true in a production environment.")

    @model_validator(mode="before")
    @classmethod
    def _known_fields(cls, data: Any) -> Any:
        return refuse_unknown_fields(data, GUARDED_FIELDS)


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


class GuardedOut(DeploymentOut):
    """A guarded rollout: its flag and whether an operator paused it."""

    flag: str
    paused: bool


class GuardedAccepted(GuardedOut):
    """202: queued, holding the flag's lock in the environment (``dispatched`` as for a deployment)."""

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


def _accepted(deployment: Deployment, **extra: Any) -> JsonResponse:
    """202 either way: the deployment is saved, holds the lock and will run. ``dispatched`` is false
    when the broker could not take its task now; ``detail`` says what happens then."""
    body = {**deployment_summary(deployment), **extra}
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


# --- Guarded rollouts (deployments.guarded) ---------------------------------------------------------

GUARDED_ACTIONS = {
    "pause": guarded_rollout_pause,
    "resume": guarded_rollout_resume,
    "skip": guarded_rollout_skip,
    "abort": guarded_rollout_abort,
}


def _guarded(deployment: Deployment) -> dict[str, Any]:
    return {"flag": deployment.flag, "paused": deployment.paused}


def _flag_changer(request: HttpRequest) -> Actor:
    """A guarded rollout moves a flag: the token needs ``flags:write`` besides ``deploy`` (the pages ask an
    operator for both permissions)."""
    token = token_of(request)
    if not token.has_scope(Scope.FLAGS_WRITE):
        raise ApiError(403, "forbidden", f"the token lacks the scope {Scope.FLAGS_WRITE}", scope=Scope.FLAGS_WRITE)
    return Actor.for_token(token)


def _confirmation(environment: Environment, confirm: bool, what: str) -> None:
    """In a production environment nothing changes without ``confirm``, as the pages ask first."""
    if environment.environment.production and not confirm:
        raise ApiError(
            422,
            "confirmation_required",
            f"{environment.name} is a production environment: send confirm true to {what}",
            field="confirm",
        )


@router.post(
    "/guarded-rollouts",
    url_name="api-guarded-rollouts",
    response={202: GuardedAccepted, 409: Locked, 413: Error, 422: Error, **_AUTH_ERRORS},
)
def guarded_start(request: HttpRequest, payload: GuardedIn) -> JsonResponse:
    """Start a guarded rollout: ``{"flag": "checkout_v2", "environment": "production", "percents": [1, 10, 100],
    "hold": 300, "confirm": true}``. The token needs ``deploy`` and ``flags:write``. 422 names the field at
    fault (no such flag or environment, a bad plan, no monitored service to guard with, a production
    environment without ``confirm``); 409 ``locked`` when a rollout of the flag runs there already."""
    actor = _flag_changer(request)
    target = Environment.objects.select_related("environment").filter(name=payload.environment).first()
    if target is not None:
        steps = ", ".join(str(p) for p in payload.percents or DEFAULT_PERCENTS)
        _confirmation(target, payload.confirm, f"start the rollout of {payload.flag} (through {steps} %)")
    plan = {key: value for key, value in (("percents", payload.percents), ("hold", payload.hold)) if value is not None}
    deployment = guarded_rollout_start(flag=payload.flag, environment=payload.environment, plan=plan, actor=actor)
    return _accepted(deployment, **_guarded(deployment))


@router.post(
    "/guarded-rollouts/{int:deployment_id}/{action}",
    url_name="api-guarded-rollout-action",
    response={200: GuardedOut, 404: Error, 409: Error, 422: Error, **_AUTH_ERRORS},
)
def guarded_action(
    request: HttpRequest,
    deployment_id: int,
    # Text, not an enumeration: an action that does not exist is a page that does not (404), before the
    # deployment is looked up or the body read, as for any other unknown address.
    action: str = Path(
        ...,
        description="pause (holds stop ending), resume, skip (the current hold ends now) or abort (restore); "
        "any other: 404.",
    ),
    confirm: str = Query("false", description="true or false (1 or 0); true is required in a production environment."),
) -> JsonResponse:
    """Pause, resume, skip ahead in, or abort an active guarded rollout. 409 when it has finished (or is
    paused already, or not paused); 422 when it is not a guarded rollout, or in production without
    ``?confirm=true``."""
    if action not in GUARDED_ACTIONS:
        raise ApiError(404, "not_found", f"no such action {action!r}: {', '.join(GUARDED_ACTIONS)}")
    actor = _flag_changer(request)
    found = get_object_or_404(Deployment.objects.select_related("environment__environment"), pk=deployment_id)
    confirm = confirm.lower()
    if confirm not in ("true", "false", "1", "0"):
        raise ApiError(422, "invalid", "true or false", field="confirm")
    if found.flag:
        _confirmation(found.environment, confirm in ("true", "1"), f"{action} guarded rollout #{found.pk}")
    updated = GUARDED_ACTIONS[action](deployment=found, actor=actor)
    updated.refresh_from_db()
    return JsonResponse({**deployment_summary(updated), **_guarded(updated)})
