"""The backups part of the operations API (scope ``backups``)."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.utils import timezone

from backups.selectors import all_readiness, status
from controlplane.api import api_view
from controlplane.models import Scope
from flags.selectors import BACKUP_VERIFICATION, is_on


@api_view(scope=Scope.BACKUPS)
def backup_status(request: HttpRequest) -> JsonResponse:
    """Per target: schedule, retention, the latest backup and the latest verification with its checks."""
    now = timezone.now()
    targets = status(now=now)
    failing = [t["target"] for t in targets if t["latestBackup"] and t["latestBackup"]["status"] == "failed"]
    failing += [
        t["target"]
        for t in targets
        if t["latestVerification"] and t["latestVerification"]["status"] == "failed" and t["target"] not in failing
    ]
    return JsonResponse(
        {
            "generated_at": now.isoformat(),
            "status": "fail" if failing else "pass",
            "failing": failing,
            "verificationScheduled": is_on(BACKUP_VERIFICATION, default=True),
            "targets": targets,
        }
    )


@api_view(scope=Scope.BACKUPS)
def recovery_readiness(request: HttpRequest) -> JsonResponse:
    """Per enabled target: recovery point against the RPO, the RTO estimate, the verified recovery window."""
    now = timezone.now()
    targets = [readiness.as_dict() for readiness in all_readiness(now=now)]
    return JsonResponse(
        {
            "generated_at": now.isoformat(),
            "ready": bool(targets) and all(t["ready"] for t in targets),
            "targets": targets,
        }
    )
