"""The backups part of the operations API (scope ``backups``)."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from ninja import Router, Schema

from backups.selectors import all_readiness, drills_readiness, running_work, status
from controlplane.models import Scope
from controlplane.openapi import Error, token_auth
from flags.selectors import BACKUP_VERIFICATION, is_on

router = Router(tags=["backups"], auth=token_auth(Scope.BACKUPS))

_ERRORS: dict[int, Any] = {400: Error, 401: Error, 403: Error, 503: Error}


class BackupStatus(Schema):
    generated_at: str
    status: str
    failing: list[str]
    verificationScheduled: bool
    targets: list[dict[str, Any]]
    running: list[dict[str, Any]]


class RecoveryReadiness(Schema):
    generated_at: str
    ready: bool
    targets: list[dict[str, Any]]
    drills: list[dict[str, Any]]


@router.get("/backup/status", url_name="api-backup-status", response={200: BackupStatus, **_ERRORS})
def backup_status(request: HttpRequest) -> JsonResponse:
    """Per target: schedule, retention, the latest backup and the latest verification with its checks; and
    the backups, uploads, verifications and drills under way, each with its last written progress."""
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
            "running": [work.as_dict() for work in running_work()],
        }
    )


@router.get("/backup/recovery-readiness", url_name="api-backup-readiness", response={200: RecoveryReadiness, **_ERRORS})
def recovery_readiness(request: HttpRequest) -> JsonResponse:
    """Per enabled target: recovery point against the RPO, the RTO estimate, the verified recovery window;
    per recovery plan drilled on a schedule: the RTO its last passed drill achieved, and its drill history.
    Ready when every target is and every drilled plan passed a drill within its schedule."""
    now = timezone.now()
    targets = [readiness.as_dict() for readiness in all_readiness(now=now)]
    drills = [plan.as_dict() for plan in drills_readiness(now=now)]
    return JsonResponse(
        {
            "generated_at": now.isoformat(),
            "ready": bool(targets) and all(t["ready"] for t in targets) and all(d["ready"] for d in drills),
            "targets": targets,
            "drills": drills,
        }
    )
