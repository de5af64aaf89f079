"""Backup pages: every target's recovery readiness, and per target its backups with their verification."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from backups.engines import BackupError
from backups.models import Backup, BackupTarget
from backups.selectors import readiness
from backups.services import NOT_SENT, backup_request, verification_request
from controlplane.access import operator_page
from controlplane.audit import Actor

VIEW_PERMISSION = "backups.view_backup"
RUN_PERMISSION = "backups.change_backup"
PAGE_SIZE = 100


@operator_page(VIEW_PERMISSION)
def index(request: HttpRequest) -> HttpResponse:
    targets = [readiness(target) for target in BackupTarget.objects.all()]
    return render(request, "backups/index.html", {"targets": targets, "can_run": request.user.has_perm(RUN_PERMISSION)})


@operator_page(VIEW_PERMISSION)
def target_detail(request: HttpRequest, name: str) -> HttpResponse:
    target = get_object_or_404(BackupTarget, name=name)
    backups = list(target.backups.prefetch_related("verifications", "copies")[:PAGE_SIZE])
    context = {
        "target": target,
        "readiness": readiness(target),
        "backups": backups,
        "can_run": request.user.has_perm(RUN_PERMISSION),
    }
    return render(request, "backups/target.html", context)


@operator_page(VIEW_PERMISSION)
@require_POST
def backup_now(request: HttpRequest, name: str) -> HttpResponse:
    if not request.user.has_perm(RUN_PERMISSION):
        raise PermissionDenied("running backups needs the backups.change_backup permission")
    target = get_object_or_404(BackupTarget, name=name)
    if backup_request(target=target, actor=Actor.for_user(request.user)):
        messages.success(request, f"Backup of {target.name} queued; it appears here when the worker has taken it.")
    else:
        messages.warning(request, f"Backup of {target.name} requested, but {NOT_SENT}.")
    return redirect("backups:target", name=target.name)


@operator_page(VIEW_PERMISSION)
@require_POST
def verify_now(request: HttpRequest, name: str, backup_id: int) -> HttpResponse:
    if not request.user.has_perm(RUN_PERMISSION):
        raise PermissionDenied("verifying backups needs the backups.change_backup permission")
    backup = get_object_or_404(Backup, pk=backup_id, target__name=name)
    try:
        sent = verification_request(backup=backup, actor=Actor.for_user(request.user))
    except BackupError as exc:
        messages.error(request, str(exc))
    else:
        if sent:
            messages.success(request, f"Verification of backup #{backup.pk} queued.")
        else:
            messages.warning(request, f"Verification of backup #{backup.pk} requested, but {NOT_SENT}.")
    return redirect("backups:target", name=name)
