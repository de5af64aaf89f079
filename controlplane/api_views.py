from __future__ import annotations

from django.http import HttpRequest, JsonResponse

from controlplane.api import api_view
from controlplane.models import Scope
from controlplane.readiness import deployment_info, overall, readiness_items


@api_view(scope=Scope.MONITORING_READ)
def config_production(request: HttpRequest) -> JsonResponse:
    """Production readiness and what is deployed, without secrets."""
    items = readiness_items()
    return JsonResponse(
        {"status": overall(items), "items": [item.as_dict() for item in items], "deployment": deployment_info()}
    )
