"""An operator watches long work on the Backups page: the progress a running drill's worker writes shows
in place (no reload) at the next poll, and the row goes once the drill has finished."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from backups.models import BackupTarget, Drill, DrillStatus
from tests.browser.test_dashboard import log_in, mark_page, not_reloaded

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def snapshot(done: int) -> dict:
    return {"phase": "restore", "done": done, "total": 3, "unit": "tables", "percent": round(done / 3 * 100, 1),
            "elapsedMs": 5000 + done * 1000, "leftMs": 20_000}  # fmt: skip


def test_a_running_drills_progress_updates_in_place_and_the_row_goes_when_it_ends(page: Page, live_server, operator):
    target, _ = BackupTarget.objects.get_or_create(name="default", defaults={"url_env": ""})
    drill = Drill.objects.create(plan="database_failure", target=target, progress=snapshot(0))
    log_in(page, live_server.url + "/backups/")
    running = page.locator("#running")
    expect(running).to_contain_text(f"drill #{drill.pk} of database_failure")
    expect(running).to_contain_text("restore 0 of 3 tables (0%)")
    mark_page(page)

    Drill.objects.filter(pk=drill.pk).update(progress=snapshot(2))  # what the worker's heartbeat writes
    expect(running).to_contain_text("restore 2 of 3 tables (67%)", timeout=10_000)
    assert not_reloaded(page)

    Drill.objects.filter(pk=drill.pk).update(status=DrillStatus.PASSED, rto_ms=9000, progress={})
    expect(running).to_contain_text("No backup, upload, verification or drill is running.", timeout=10_000)
    assert not_reloaded(page)


def test_an_uploads_progress_updates_in_place_and_the_row_goes_when_it_is_verified(page: Page, live_server, operator):
    from django.utils import timezone

    from backups.models import Backup, BackupCopy, CopyStatus

    target, _ = BackupTarget.objects.get_or_create(name="default", defaults={"url_env": ""})
    backup = Backup.objects.create(target=target, status="succeeded", size_bytes=4 << 20)

    def sent(mib: int) -> dict:
        return {"phase": "upload offsite", "done": mib << 20, "total": 4 << 20, "unit": "bytes",
                "percent": mib * 25.0, "elapsedMs": 1000 + mib * 1000, "leftMs": 8000}  # fmt: skip

    copy = BackupCopy.objects.create(
        backup=backup, storage="offsite", status=CopyStatus.UPLOADING, started_at=timezone.now(), progress=sent(1)
    )
    log_in(page, live_server.url + "/backups/")
    running = page.locator("#running")
    expect(running).to_contain_text(f"copy of backup #{backup.pk} (default) to offsite")
    expect(running).to_contain_text("upload offsite 1.0 MiB of 4.0 MiB (25%)")
    mark_page(page)

    BackupCopy.objects.filter(pk=copy.pk).update(progress=sent(3))  # what the upload's progress thread writes
    expect(running).to_contain_text("upload offsite 3.0 MiB of 4.0 MiB (75%)", timeout=10_000)
    assert not_reloaded(page)

    BackupCopy.objects.filter(pk=copy.pk).update(status=CopyStatus.VERIFIED, progress={})
    expect(running).to_contain_text("No backup, upload, verification or drill is running.", timeout=10_000)
    assert not_reloaded(page)
