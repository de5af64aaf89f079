"""Backup pages: every target's recovery readiness, and per target its backups with their verification."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from backups.drills import drill_request
from backups.engines import BackupError
from backups.models import Backup, BackupTarget
from backups.selectors import drills_readiness, readiness, running_work
from backups.services import NOT_SENT, backup_request, verification_request
from controlplane.access import operator_page
from controlplane.audit import Actor
from controlplane.errors import ControlPlaneError
from controlplane.forms import report

VIEW_PERMISSION = "backups.view_backup"
RUN_PERMISSION = "backups.change_backup"
PAGE_SIZE = 100
LIVE_SECONDS = 2  # how often the page asks for the progress of the work under way


@operator_page(VIEW_PERMISSION)
def index(request: HttpRequest) -> HttpResponse:
    targets = [readiness(target) for target in BackupTarget.objects.all()]
    context = {
        "targets": targets,
        "drills": drills_readiness(),
        "running": running_work(),
        "live_seconds": LIVE_SECONDS,
        "can_run": request.user.has_perm(RUN_PERMISSION),
    }
    return render(request, "backups/index.html", context)


@operator_page(VIEW_PERMISSION)
def live(request: HttpRequest) -> HttpResponse:
    """The work under way with its progress: the Backups page's htmx polls it while the page is open."""
    return render(request, "backups/_running.html", {"running": running_work(), "live_seconds": LIVE_SECONDS})


@operator_page(VIEW_PERMISSION)
@require_POST
def drill_now(request: HttpRequest, plan: str) -> HttpResponse:
    if not request.user.has_perm(RUN_PERMISSION):
        raise PermissionDenied("running drills needs the backups.change_backup permission")
    try:
        sent = drill_request(plan_name=plan, actor=Actor.for_user(request.user))
    except ControlPlaneError as exc:
        report(request, exc)
        return redirect("backups:index")
    if sent:
        messages.success(request, f"Drill of {plan} queued; it appears below when the worker has taken it.")
    else:
        messages.warning(request, f"Drill of {plan} requested, but {NOT_SENT}; the schedule drills it in its time.")
    return redirect(reverse("backups:index") + f"#plan-{plan}")


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
