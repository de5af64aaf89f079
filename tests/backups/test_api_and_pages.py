"""The backup API (scope backups), the backups pages and the admin actions, on the control plane's own database."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from backups.models import Backup, BackupStatus, BackupTarget, VerificationResult
from backups.services import backup_create, backup_verify
from controlplane.audit import Actor
from controlplane.models import AuditEvent

pytestmark = [pytest.mark.django_db]
SYSTEM = Actor.system("tests")


@pytest.fixture
def default_target():
    target, _ = BackupTarget.objects.get_or_create(name="default", defaults={"url_env": ""})
    return target


def test_the_backup_api_needs_the_backups_scope(api_client, default_target):
    for name in ("api-backup-status", "api-backup-readiness"):
        url = reverse(name)
        response = Client().get(url)
        assert response.status_code == 401 and "error" in response.json()
        assert api_client("flags:read").get(url).status_code == 403
        assert api_client("backups").get(url).status_code == 200
        assert api_client("backups").post(url).status_code == 405


def test_status_and_readiness_after_a_verified_backup(api_client, default_target):
    api = api_client("backups")
    before = api.get(reverse("api-backup-readiness")).json()
    [entry] = before["targets"]
    assert before["ready"] is False and entry["latestVerifiedBackup"] is None
    assert "no verified backup" in entry["problems"]

    backup = backup_create(target=default_target, actor=SYSTEM)
    assert backup.status == BackupStatus.SUCCEEDED, backup.error
    verification = backup_verify(backup=backup, actor=SYSTEM)
    assert verification.status == VerificationResult.PASSED, verification.checks

    body = api.get(reverse("api-backup-status")).json()
    [target] = body["targets"]
    assert body["status"] == "pass" and body["failing"] == []
    assert target["latestBackup"]["id"] == backup.pk and target["latestBackup"]["sha256"] == backup.sha256
    assert target["latestBackup"]["verification"] == "passed" and target["latestBackup"]["tables"] > 10
    checks = {check["name"]: check["status"] for check in target["latestVerification"]["checks"]}
    assert checks == {
        "checksum": "pass",
        "restore": "pass",
        "row_counts": "pass",
        "schema": "pass",
        "integrity": "pass",
    }
    assert target["latestVerification"]["scratchDropped"] is True

    ready = api.get(reverse("api-backup-readiness")).json()
    [entry] = ready["targets"]
    assert ready["ready"] is True and entry["rpoMet"] is True and entry["windowComplete"] is True
    assert entry["latestVerifiedBackup"]["id"] == backup.pk
    assert entry["rtoEstimateSeconds"] == verification.restore_ms / 1000


def test_pages_need_a_login_and_show_each_backup(viewer_client, default_target):
    for url in (reverse("backups:index"), reverse("backups:target", args=["default"])):
        assert Client().get(url).status_code == 302
    Backup.objects.create(
        target=default_target, status=BackupStatus.FAILED, engine="sqlite", error="pg_dump failed: disk full"
    )
    page = viewer_client.get(reverse("backups:index")).content.decode()
    assert 'id="target-default"' in page and "at risk" in page
    detail = viewer_client.get(reverse("backups:target", args=["default"])).content.decode()
    assert "pg_dump failed: disk full" in detail
    assert "Back up now" not in detail  # a viewer may look, not run
    assert viewer_client.post(reverse("backups:backup-now", args=["default"])).status_code == 403
    assert not AuditEvent.objects.filter(action="backup.requested").exists()
    assert viewer_client.get(reverse("backups:target", args=["nope"])).status_code == 404


def test_an_operator_backs_up_and_verifies_from_the_page(
    operator_client, default_target, eager_tasks, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = operator_client.post(reverse("backups:backup-now", args=["default"]))
    assert response.status_code == 302
    backup = Backup.objects.get(target=default_target)
    assert backup.status == BackupStatus.SUCCEEDED, backup.error
    assert AuditEvent.objects.filter(action="backup.requested", actor_label="operator").exists()

    with django_capture_on_commit_callbacks(execute=True):
        operator_client.post(reverse("backups:verify-now", args=["default", backup.pk]))
    backup.refresh_from_db()
    assert backup.verification == VerificationResult.PASSED
    page = operator_client.get(reverse("backups:target", args=["default"])).content.decode()
    assert f'id="backup-{backup.pk}"' in page and backup.sha256 in page and "passed" in page
    assert 'restore <span class="pill tone-ok" data-status="pass">' in page  # each check's status as a pill


def test_admin_actions_queue_audited_runs(
    operator_client, default_target, eager_tasks, django_capture_on_commit_callbacks
):
    url = reverse("admin:backups_backuptarget_changelist")
    with django_capture_on_commit_callbacks(execute=True):
        operator_client.post(url, {"action": "back_up_now", "_selected_action": [default_target.pk]})
    backup = Backup.objects.get(target=default_target)
    assert backup.status == BackupStatus.SUCCEEDED
    with django_capture_on_commit_callbacks(execute=True):
        operator_client.post(
            reverse("admin:backups_backup_changelist"), {"action": "verify_now", "_selected_action": [backup.pk]}
        )
    backup.refresh_from_db()
    assert backup.verification == VerificationResult.PASSED
    actions = set(AuditEvent.objects.values_list("action", flat=True))
    assert {"backup.requested", "backup.create", "backup.verify_requested", "backup.verify"} <= actions
    # Backups are never edited or deleted in admin.
    change = operator_client.get(reverse("admin:backups_backup_change", args=[backup.pk])).content.decode()
    assert 'name="sha256"' not in change
    assert operator_client.post(reverse("admin:backups_backup_delete", args=[backup.pk])).status_code == 403


def test_admin_target_edits_go_through_the_service(operator_client, default_target):
    url = reverse("admin:backups_backuptarget_change", args=[default_target.pk])
    data = {
        "name": "default",
        "url_env": "",
        "interval_hours": 12,
        "retention_days": 3,  # shorter than the 7-day recovery window: refused
        "retention_count": 0,
        "rpo_hours": 26,
        "recovery_window_days": 7,
        "enabled": "on",
        "kind": "dump",
        "full_every_days": 7,
    }
    refused = operator_client.post(url, data)
    assert refused.status_code == 200 and "fewer than the 7-day recovery window" in refused.content.decode()
    default_target.refresh_from_db()
    assert default_target.interval_hours == 24
    data["retention_days"] = 14
    assert operator_client.post(url, data).status_code == 302
    default_target.refresh_from_db()
    assert default_target.interval_hours == 12
    event = AuditEvent.objects.get(action="backup_target.update")
    assert event.before["interval_hours"] == 24 and event.after["interval_hours"] == 12
