"""Long work shows how far it is: the row's progress (written with the heartbeat), the Backups page's live
part, and the commands' progress line."""

from __future__ import annotations

import io
import threading
import time

import pytest
from django.core.management import call_command
from django.core.management.base import OutputWrapper
from django.db import connection
from django.urls import reverse

from backups.models import Backup, BackupStatus
from backups.progress import Progress, ProgressLine, describe, report, running, watching
from backups.services import backup_create, target_create
from controlplane.audit import Actor
from tests.backups.conftest import pg_url

SYSTEM = Actor.system("tests")
# Big enough that pg_dump writes for a while: a few MiB once compressed.
BIG_SCHEMA = """
CREATE TABLE events (id bigserial PRIMARY KEY, payload text NOT NULL);
INSERT INTO events (payload)
SELECT md5(g::text) || md5((g * 7)::text) || md5((g * 13)::text) FROM generate_series(1, 300000) g;
"""


@pytest.mark.service("postgres")
def test_progress_advances_during_a_real_backup_and_the_page_and_the_command_show_it(
    transactional_db, pg_server, monkeypatch, settings, operator_client
):
    settings.BACKUP_PROGRESS_SECONDS = 0.05
    name = pg_server.create("bk_big", BIG_SCHEMA)
    variable = f"BK_BIG_{pg_server.label.upper()}"
    monkeypatch.setenv(variable, pg_url(name))
    target = target_create(data={"name": f"big-{pg_server.label}", "url_env": variable}, actor=SYSTEM)
    first = backup_create(target=target, actor=SYSTEM)  # the previous run the estimates come from
    assert first.status == BackupStatus.SUCCEEDED

    outcome: list[Backup] = []
    finished = threading.Event()

    def back_up() -> None:
        try:
            outcome.append(backup_create(target=target, actor=SYSTEM))
        finally:
            connection.close()
            finished.set()

    worker = threading.Thread(target=back_up)
    worker.start()
    seen, page = [], ""
    while not finished.is_set():
        progress = Backup.objects.filter(target=target, status=BackupStatus.RUNNING).values_list("progress", flat=True)
        snapshot = progress.first()
        if snapshot:
            seen.append(snapshot)
            if not page and snapshot["phase"] == "dump" and snapshot["done"]:
                page = operator_client.get(reverse("backups:live")).content.decode()
        time.sleep(0.01)
    worker.join()

    [backup] = outcome
    assert backup.status == BackupStatus.SUCCEEDED
    dumping = [s for s in seen if s["phase"] == "dump" and s["done"]]
    assert dumping, f"no progress of the dump was written: {seen}"
    done = [s["done"] for s in dumping]
    assert done == sorted(done) and done[-1] <= backup.size_bytes
    assert all(s["unit"] == "bytes" and s["total"] == first.size_bytes for s in dumping)
    assert all(s["leftMs"] is not None and s["elapsedMs"] >= 0 for s in dumping)
    assert f"backup #{backup.pk} of {target.name}" in page and "dump " in page
    assert Backup.objects.get(pk=backup.pk).progress == {}  # a finished backup keeps no progress

    # The command's progress line: not a terminal here, so whole lines (the first at once).
    err, out = io.StringIO(), io.StringIO()
    call_command("backup", target.name, stdout=out, stderr=err)
    latest = Backup.objects.filter(target=target).order_by("-id").first()
    assert f"backup #{latest.pk} of {target.name}: " in err.getvalue()
    assert "\r" not in err.getvalue() and "elapsed" in err.getvalue()
    assert f"backup #{latest.pk}" in out.getvalue()

    # A verification's restore counts the tables whose rows pg_restore has started to load.
    heard: list[dict] = []
    err = io.StringIO()
    with watching(lambda progress, snapshot: heard.append(snapshot)):
        call_command("verify_backup", "--latest", target.name, stdout=io.StringIO(), stderr=err)
    assert f"of backup #{latest.pk} ({target.name}): " in err.getvalue()
    counted = [s for s in heard if s["phase"] == "restore" and s["unit"] == "tables"]  # once the scratch exists
    assert counted and all(s["total"] == 1 and s["done"] in (0, 1) for s in counted), heard


def test_the_backups_page_shows_the_progress_of_the_work_under_way(db, operator_client):
    from backups.models import BackupTarget

    target, _ = BackupTarget.objects.get_or_create(name="default", defaults={"url_env": ""})
    snapshot = {
        "phase": "dump",
        "done": 5 * 1024 * 1024,
        "total": 10 * 1024 * 1024,
        "unit": "bytes",
        "percent": 50.0,
        "elapsedMs": 65_000,
        "leftMs": 30_000,
    }
    running_backup = Backup.objects.create(target=target, engine="postgresql", progress=snapshot)
    for name in ("backups:index", "backups:live"):
        page = operator_client.get(reverse(name)).content.decode()
        assert f"backup #{running_backup.pk} of default" in page
        assert "dump 5.0 MiB of 10.0 MiB (50%), 1 min 05 s elapsed, about 30 s left" in page
        assert 'hx-get="/backups/live"' in page and 'hx-trigger="every 2s"' in page


def test_a_report_outside_a_run_does_nothing_and_inside_one_reaches_its_progress():
    report(phase="upload s3", done=1, total=2, unit="bytes")  # no run: nothing to do, no error
    progress = Progress("backup #1 of crm", expected_ms=None)
    with running(progress):
        report(phase="upload s3", done=512, total=2048, unit="bytes")
    snapshot = progress.snapshot()
    assert (snapshot["phase"], snapshot["done"], snapshot["total"], snapshot["percent"]) == ("upload s3", 512, 2048, 25)
    assert snapshot["leftMs"] is not None  # extrapolated from the fraction done, without a previous run
    report(phase="after", done=9)
    assert progress.snapshot()["phase"] == "upload s3"


def test_a_terminal_gets_one_line_rewritten_in_place():
    stream = io.StringIO()
    line = ProgressLine(OutputWrapper(stream), tty=True, every=10)
    progress = Progress("drill #4 of database_failure", expected_ms=60_000)
    progress.report(phase="restore")
    line(progress, progress.snapshot())
    progress.report(phase="smoke queries", done=1, total=2, unit="queries")
    line(progress, progress.snapshot())
    line.end()
    text = stream.getvalue()
    assert text.count("\r") >= 3 and "\n" not in text
    assert "drill #4 of database_failure: restore" in text
    assert "smoke queries 1 of 2 queries (50%)" in text
    assert describe({}) == "starting"
