"""Operator screens for backups: targets are edited through the services; backups are read-only."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from backups.engines import BackupError
from backups.models import Backup, BackupCopy, BackupStatus, BackupTarget, Drill, Verification
from backups.services import (
    NOT_SENT,
    TARGET_FIELDS,
    backup_request,
    target_create,
    target_update,
    verification_request,
)
from controlplane.admin import ReadOnlyAdminMixin, ReadOnlyInlineMixin
from controlplane.audit import Actor
from controlplane.status import StatusPillsAdmin, admin_status


@admin.register(BackupTarget)
class BackupTargetAdmin(admin.ModelAdmin):
    list_display = ["name", "kind", "source_label", "interval_hours", "rpo_hours", "recovery_window_days", "enabled"]
    list_filter = ["enabled"]
    fields = list(TARGET_FIELDS)
    actions = ["back_up_now", "verify_latest_now"]

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # backups point at their target; disable a target instead

    def save_model(self, request: HttpRequest, obj: BackupTarget, form: Any, change: bool) -> None:
        actor = Actor.for_user(request.user)
        values = {key: form.cleaned_data[key] for key in TARGET_FIELDS if key in form.cleaned_data}
        saved = (
            target_update(target=obj, changes=values, actor=actor)
            if change
            else target_create(data=values, actor=actor)
        )
        obj.pk = saved.pk
        obj._state.adding = False

    @admin.action(description="Back up now (queued to the worker)", permissions=["change"])
    def back_up_now(self, request: HttpRequest, queryset: QuerySet[BackupTarget]) -> None:
        unsent = [t.name for t in queryset if not backup_request(target=t, actor=Actor.for_user(request.user))]
        self.message_user(request, f"{queryset.count() - len(unsent)} backup(s) queued.", messages.SUCCESS)
        if unsent:
            self.message_user(request, f"Backups of {', '.join(unsent)} requested, but {NOT_SENT}.", messages.WARNING)

    @admin.action(description="Verify the latest backup now (queued to the worker)", permissions=["change"])
    def verify_latest_now(self, request: HttpRequest, queryset: QuerySet[BackupTarget]) -> None:
        queued = 0
        for target in queryset:
            backup = target.backups.succeeded().order_by("-started_at").first()
            if backup is None:
                self.message_user(request, f"{target.name} has no finished backup to verify.", messages.WARNING)
                continue
            if not verification_request(backup=backup, actor=Actor.for_user(request.user)):
                self.message_user(
                    request, f"Verification of {target.name} requested, but {NOT_SENT}.", messages.WARNING
                )
                continue
            queued += 1
        if queued:
            self.message_user(request, f"{queued} verification(s) queued.", messages.SUCCESS)


class VerificationInline(ReadOnlyInlineMixin, admin.TabularInline):
    model = Verification
    fields = readonly_fields = (
        "status",
        "started_at",
        "duration_ms",
        "restore_ms",
        "failed_check",
        "error",
        "scratch_dropped",
    )


class CopyInline(ReadOnlyInlineMixin, admin.TabularInline):
    model = BackupCopy
    fields = readonly_fields = ("storage", "status", "size_bytes", "sha256", "attempts", "verified_at", "error")


@admin.register(BackupCopy)
class BackupCopyAdmin(StatusPillsAdmin, ReadOnlyAdminMixin, admin.ModelAdmin):
    """Copies are written by the upload service alone (read back, audited); here they are only read."""

    list_display = ["id", "backup", "storage", admin_status("status"), "size_bytes", "attempts", "verified_at"]
    list_filter = ["storage", "status"]
    list_select_related = ["backup__target"]
    readonly_fields = [
        "backup", "storage", "name", "status", "size_bytes", "sha256", "attempts", "started_at", "duration_ms",
        "verified_at", "next_attempt_at", "error", "progress",
    ]  # fmt: skip


@admin.register(Backup)
class BackupAdmin(StatusPillsAdmin, ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = [
        "id", "target", admin_status("status"), "started_at", "duration_ms", "size_bytes", admin_status("verification"),
        "verified_at",
    ]  # fmt: skip
    list_filter = ["target", "status", "verification", "started_at"]
    readonly_fields = [
        "target", "status", "engine", "started_at", "heartbeat_at", "finished_at", "duration_ms", "file", "size_bytes",
        "sha256", "encrypted", "plaintext_sha256", "plaintext_size_bytes", "tool_versions", "manifest", "error",
        "requested_by", "verification", "verified_at",
    ]  # fmt: skip
    inlines = [CopyInline, VerificationInline]
    actions = ["verify_now"]

    def has_verify_permission(self, request: HttpRequest) -> bool:
        # Backups are never edited here; whoever may change backups may ask for a verification.
        return request.user.has_perm("backups.change_backup")

    @admin.action(description="Verify now (queued to the worker)", permissions=["verify"])
    def verify_now(self, request: HttpRequest, queryset: QuerySet[Backup]) -> None:
        queued = 0
        for backup in queryset.filter(status=BackupStatus.SUCCEEDED):
            try:
                sent = verification_request(backup=backup, actor=Actor.for_user(request.user))
            except BackupError as exc:
                self.message_user(request, str(exc), messages.ERROR)
                continue
            if not sent:
                self.message_user(request, f"Verification of #{backup.pk} requested, but {NOT_SENT}.", messages.WARNING)
                continue
            queued += 1
        self.message_user(request, f"{queued} verification(s) queued.", messages.SUCCESS)


@admin.register(Drill)
class DrillAdmin(StatusPillsAdmin, ReadOnlyAdminMixin, admin.ModelAdmin):
    """Restore drills are recorded by the drill runs only; plans and their schedule are edited in deployments."""

    list_display = ["id", "plan", "target", admin_status("status"), "started_at", "rto_ms", "backup"]
    list_filter = ["plan", "status", "started_at"]
    readonly_fields = [
        "plan", "target", "backup", "status", "started_at", "heartbeat_at", "finished_at", "rto_ms", "interval_hours",
        "smoke_queries", "checks", "scratch", "scratch_dropped", "error", "requested_by", "progress",
    ]  # fmt: skip
