"""The ground's part of the operations API: the production configuration report."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, JsonResponse
from ninja import Router, Schema

from controlplane.models import Scope
from controlplane.openapi import Error, token_auth
from controlplane.readiness import deployment_info, overall, readiness_items

router = Router(tags=["control plane"], auth=token_auth(Scope.MONITORING_READ))


class ProductionConfig(Schema):
    status: str
    items: list[dict[str, Any]]
    deployment: dict[str, Any]


@router.get(
    "/config/production",
    url_name="api-config-production",
    response={200: ProductionConfig, 400: Error, 401: Error, 403: Error, 503: Error},
)
def config_production(request: HttpRequest) -> JsonResponse:
    """Production readiness and what is deployed, without secrets."""
    items = readiness_items()
    return JsonResponse(
        {"status": overall(items), "items": [item.as_dict() for item in items], "deployment": deployment_info()}
    )
