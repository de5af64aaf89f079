"""Off-site copies: each backup copied to the storages its target names, counted only once read back with the
same size and sha256; faults of the S3 server fail the copy cleanly and it is tried again; retention per
storage keeps the newest verified copy; verification restores from the off-site copy.

The S3-compatible server is moto's standalone server, started by the suite on 127.0.0.1 (``s3_server``),
reached directly or through a FaultProxy of the test's own. The file system stands in as a second storage too.
"""

from __future__ import annotations

import hashlib
import secrets
import socket
import subprocess
import sys
import time
from datetime import timedelta

import boto3
import pytest
from django.core.files.storage import FileSystemStorage
from django.utils import timezone

from backups import progress
from backups.copies import copies_due, copies_upload, prune_copies
from backups.models import Backup, BackupCopy, CopyStatus, VerificationResult
from backups.services import backup_create, backup_verify, backups_prune, target_update
from controlplane.models import AuditEvent
from controlplane.settings import s3_backup_storage
from tests.backups.conftest import SYSTEM
from tests.faultproxy import FaultProxy

pytestmark = pytest.mark.django_db
KEYS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing", "region_name": "us-east-1"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """moto's S3-compatible server on a free loopback port, for the whole session (each xdist worker its own)."""
    port = _free_port()
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen(  # noqa: S603 - our interpreter, fixed arguments
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=log
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"moto's server did not start on 127.0.0.1:{port}")
            time.sleep(0.2)
    yield f"http://127.0.0.1:{port}"
    process.terminate()
    process.wait(timeout=10)
    log.close()


def _client(endpoint: str):
    return boto3.client("s3", endpoint_url=endpoint, **KEYS)


@pytest.fixture
def bucket(s3_server, settings):
    """A new bucket on the server, the storage "offsite" pointed at it (prefix "cp-backups")."""
    name = f"bk-{secrets.token_hex(6)}"
    _client(s3_server).create_bucket(Bucket=name)
    point_offsite_at(settings, s3_server, name)
    settings.BACKUP_COPY_RETRY_MINUTES = 15
    return name


def point_offsite_at(
    settings, endpoint: str, bucket: str, *, timeout: int = 60, checksums: str = "when_supported"
) -> None:
    storage = s3_backup_storage(
        bucket=bucket,
        prefix="cp-backups",
        endpoint_url=endpoint,
        region="us-east-1",
        access_key="testing",
        secret_key="testing",
        timeout=timeout,
        checksums=checksums,
    )
    settings.STORAGES = {**settings.STORAGES, "offsite": storage}


def _object(s3_server: str, bucket: str, name: str) -> bytes:
    return _client(s3_server).get_object(Bucket=bucket, Key=f"cp-backups/{name}")["Body"].read()


def _objects(s3_server: str, bucket: str) -> list[str]:
    listing = _client(s3_server).list_objects_v2(Bucket=bucket)
    return sorted(item["Key"] for item in listing.get("Contents", []))


def _offsite(target):
    return target_update(target=target, changes={"copy_storages": ["offsite"]}, actor=SYSTEM)


def test_a_backup_is_copied_off_site_and_counts_once_read_back(source, bucket, s3_server, backup_dirs):
    target = _offsite(source.target)
    backup = backup_create(target=target, actor=SYSTEM)
    assert {c.storage: c.status for c in backup.copies.all()} == {"backups": "verified", "offsite": "pending"}

    [copy] = copies_upload(backup=backup, actor=SYSTEM)

    assert copy.status == CopyStatus.VERIFIED, copy.error
    assert (copy.size_bytes, copy.sha256) == (backup.size_bytes, backup.sha256)
    assert copy.verified_at is not None and copy.attempts == 1 and copy.name == backup.file
    stored = _object(s3_server, bucket, backup.file)
    assert hashlib.sha256(stored).hexdigest() == backup.sha256
    assert stored == (backup_dirs.backups / backup.file).read_bytes()
    event = AuditEvent.objects.get(action="backup.copy")
    assert event.after["storage"] == "offsite" and event.after["status"] == "verified"


def test_the_status_api_and_the_page_show_each_copy(sqlite_source, bucket, client, operator, api_client):
    target = _offsite(sqlite_source.target)
    backup = backup_create(target=target, actor=SYSTEM)
    copies_upload(backup=backup, actor=SYSTEM)

    body = api_client("backups").get("/api/deployment/backup/status").json()
    [row] = [t for t in body["targets"] if t["target"] == target.name]
    copies = {c["storage"]: c for c in row["latestBackup"]["copies"]}
    assert copies["offsite"]["status"] == "verified" and copies["offsite"]["sha256"] == backup.sha256
    assert copies["backups"]["status"] == "verified"
    assert [s["storage"] for s in row["storages"]] == ["backups", "offsite"]
    assert row["storages"][1]["latestVerifiedBackupId"] == backup.pk

    client.force_login(operator)
    page = client.get(f"/backups/{target.name}/").content.decode()
    assert 'data-storage="offsite"' in page and 'data-status="verified"' in page


def test_verification_restores_from_the_off_site_copy_when_the_local_disk_is_gone(
    source, bucket, backup_dirs, settings, tmp_path
):
    """The disaster case: the local file lost, the encrypted off-site copy restored and checked."""
    from pyrage import x25519

    identity = x25519.Identity.generate()
    (tmp_path / "id.txt").write_text(f"{identity}\n")
    settings.BACKUP_AGE_RECIPIENTS = [str(identity.to_public())]
    settings.BACKUP_AGE_IDENTITY_FILE = str(tmp_path / "id.txt")
    target = _offsite(source.target)
    backup = backup_create(target=target, actor=SYSTEM)
    copies_upload(backup=backup, actor=SYSTEM)
    (backup_dirs.backups / backup.file).unlink()

    local = backup_verify(backup=backup, actor=SYSTEM)
    assert local.status == VerificationResult.FAILED and "missing from the backups storage" in local.error

    verification = backup_verify(backup=backup, actor=SYSTEM, storage="offsite")

    assert verification.status == VerificationResult.PASSED, verification.error
    assert verification.storage == "offsite"
    assert "plaintext" in [check["name"] for check in verification.checks]
    assert [name for name in backup_dirs.files() if not name.startswith(target.name)] == []  # no download left


def test_verifying_from_a_storage_without_a_verified_copy_is_refused(sqlite_source, bucket):
    from backups.engines import BackupError

    backup = backup_create(target=_offsite(sqlite_source.target), actor=SYSTEM)
    with pytest.raises(BackupError, match="in offsite is waiting to upload, not verified"):
        backup_verify(backup=backup, actor=SYSTEM, storage="offsite")
    with pytest.raises(BackupError, match="has no copy in the storage 'elsewhere'"):
        backup_verify(backup=backup, actor=SYSTEM, storage="elsewhere")


@pytest.mark.parametrize("fault", ["refuse", "hang", "cut-mid-upload"], ids=["refuse", "hang", "cut-mid-upload"])
def test_a_fault_of_the_s3_server_fails_the_copy_leaves_no_half_copy_and_it_is_retried(
    sqlite_source, bucket, s3_server, settings, fault
):
    target = _offsite(sqlite_source.target)
    upstream = s3_server.rsplit(":", 1)
    with FaultProxy("127.0.0.1", int(upstream[1])) as proxy:
        point_offsite_at(settings, f"http://{proxy.address}", bucket, timeout=2)
        backup = backup_create(target=target, actor=SYSTEM)
        assert backup.size_bytes > 32 * 1024  # the cut falls inside the file's bytes
        {"refuse": proxy.refuse, "hang": proxy.hang, "cut-mid-upload": lambda: proxy.cut_after(32 * 1024)}[fault]()

        [copy] = copies_upload(backup=backup, actor=SYSTEM)

        assert copy.status == CopyStatus.FAILED
        assert copy.error.startswith("uploading to offsite failed: ")
        assert "testing" not in copy.error.lower().replace("uploading to", "")  # no credentials
        assert copy.next_attempt_at > timezone.now() and copy.attempts == 1
        assert copy.verified_at is None and copy.sha256 == ""
        assert _objects(s3_server, bucket) == []  # nothing under the name counts, or is there
        assert AuditEvent.objects.filter(action="backup.copy_failed").count() == 1
        # Not due again until its delay has passed; then run_due's query finds it and the upload succeeds.
        assert copy.pk not in copies_due()
        proxy.heal()
        assert copy.pk in copies_due(now=timezone.now() + timedelta(minutes=16))
        BackupCopy.objects.filter(pk=copy.pk).update(next_attempt_at=timezone.now())
        [copy] = copies_upload(backup=backup, actor=SYSTEM)

    assert copy.status == CopyStatus.VERIFIED and copy.attempts == 2 and copy.error == ""
    assert _objects(s3_server, bucket) == [f"cp-backups/{backup.file}"]


@pytest.mark.parametrize("checksums", ["when_supported", "when_required"])
def test_either_checksum_setting_makes_a_copy_that_reads_back_whole(
    sqlite_source, bucket, s3_server, settings, checksums
):
    """BACKUP_S3_CHECKSUMS: boto3's per-part CRC (the default) or only the checksums an operation demands
    (for a service refusing the newer headers); the copy counts by its read-back either way."""
    assert settings.STORAGES["offsite"]["OPTIONS"]["client_config"].request_checksum_calculation == "when_supported"
    point_offsite_at(settings, s3_server, bucket, checksums=checksums)
    backup = backup_create(target=_offsite(sqlite_source.target), actor=SYSTEM)

    [copy] = copies_upload(backup=backup, actor=SYSTEM)

    assert copy.status == CopyStatus.VERIFIED, copy.error
    assert hashlib.sha256(_object(s3_server, bucket, backup.file)).hexdigest() == backup.sha256


def test_a_copy_that_reads_back_different_is_failed_and_deleted(sqlite_source, bucket, s3_server):
    backup = backup_create(target=_offsite(sqlite_source.target), actor=SYSTEM)
    Backup.objects.filter(pk=backup.pk).update(sha256="0" * 64)  # as if the storage returned other bytes
    backup.refresh_from_db()

    [copy] = copies_upload(backup=backup, actor=SYSTEM)

    assert copy.status == CopyStatus.FAILED
    assert "read back" in copy.error and "the copy was deleted" in copy.error
    assert _objects(s3_server, bucket) == []


def test_a_file_system_storage_serves_as_an_off_site_storage_too(sqlite_source, settings, tmp_path, backup_dirs):
    settings.STORAGES = {
        **settings.STORAGES,
        "nas": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path / "nas")},
        },
    }
    target = target_update(target=sqlite_source.target, changes={"copy_storages": ["nas"]}, actor=SYSTEM)
    backup = backup_create(target=target, actor=SYSTEM)

    [copy] = copies_upload(backup=backup, actor=SYSTEM)

    assert copy.status == CopyStatus.VERIFIED
    assert hashlib.sha256((tmp_path / "nas" / backup.file).read_bytes()).hexdigest() == backup.sha256
    assert (backup_dirs.backups / backup.file).is_file()  # copied, not moved away from the local storage


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (["nowhere"], "no storage named 'nowhere' in STORAGES"),
        (["backups"], "'backups' is not a storage for backups copies"),
        ("offsite", "a list of storage names"),
        (["offsite", "offsite"], "a storage is named twice"),
    ],
    ids=["unknown", "local-one", "not-a-list", "twice"],
)
def test_a_target_naming_a_bad_storage_is_refused(sqlite_source, bucket, value, message):
    from backups.services import InvalidBackupTarget

    with pytest.raises(InvalidBackupTarget, match=message):
        target_update(target=sqlite_source.target, changes={"copy_storages": value}, actor=SYSTEM)
    sqlite_source.target.refresh_from_db()
    assert sqlite_source.target.copy_storages == []


def test_retention_runs_per_storage_and_keeps_the_newest_verified_copy_in_each(sqlite_source, bucket, s3_server):
    target = _offsite(sqlite_source.target)
    target = target_update(target=target, changes={"retention_days": 7, "retention_count": 1}, actor=SYSTEM)
    old = timezone.now() - timedelta(days=30)
    backups = []
    for _ in range(3):
        backup = backup_create(target=target, actor=SYSTEM)
        Backup.objects.filter(pk=backup.pk).update(started_at=old)
        backup.refresh_from_db()
        backups.append(backup)
        old += timedelta(hours=1)
    first, second, third = backups
    copies_upload(backup=first, actor=SYSTEM)  # only the oldest reached the off-site storage
    for backup in (second, third):
        BackupCopy.objects.filter(backup=backup, storage="offsite").update(status=CopyStatus.FAILED, error="refused")

    pruned = backups_prune(target=target, actor=SYSTEM)

    # The newest backup is kept by count; the oldest keeps its off-site copy, the newest verified one there.
    assert pruned == 1
    assert not Backup.objects.filter(pk=second.pk).exists()
    assert list(first.copies.values_list("storage", flat=True)) == ["offsite"]
    assert _objects(s3_server, bucket) == [f"cp-backups/{first.file}"]
    assert sorted(third.copies.values_list("storage", flat=True)) == ["backups", "offsite"]
    assert AuditEvent.objects.filter(action="backup.copy_prune").count() == 3  # first's local; second's two
    assert prune_copies(backups=[], actor=SYSTEM) == 0


def test_run_due_sends_a_copy_whose_retry_is_due_and_the_worker_uploads_it(sqlite_source, bucket, eager_tasks):
    from backups.tasks import run_due

    backup = backup_create(target=_offsite(sqlite_source.target), actor=SYSTEM)
    BackupCopy.objects.filter(backup=backup, storage="offsite").update(
        status=CopyStatus.FAILED, attempts=1, error="refused", next_attempt_at=timezone.now() - timedelta(minutes=1)
    )

    summary = run_due()

    copy = BackupCopy.objects.get(backup=backup, storage="offsite")
    assert summary["copies"] == [copy.pk]
    assert copy.status == CopyStatus.VERIFIED and copy.attempts == 2 and copy.error == ""
    assert run_due()["copies"] == []  # verified: nothing more to send


def test_the_commands_copy_after_the_backup_and_verify_from_the_off_site_copy(sqlite_source, bucket):
    from io import StringIO

    from django.core.management import call_command

    target = _offsite(sqlite_source.target)
    out, err = StringIO(), StringIO()
    call_command("backup", target.name, stdout=out, stderr=err)
    assert f"{target.name}: copied to offsite, read back" in out.getvalue()
    backup = Backup.objects.get(target=target)
    # The progress line (not a terminal: whole lines, the first at once) shows the upload.
    assert f"copy of backup #{backup.pk} to offsite: " in err.getvalue()

    out = StringIO()
    call_command("verify_backup", str(backup.pk), "--from-storage", "offsite", stdout=out)

    assert f"backup #{backup.pk} of {target.name} verified from its copy in offsite" in out.getvalue()
    assert backup.verifications.get().storage == "offsite"


class ProgressRecordingStorage(FileSystemStorage):
    """A file-system storage that notes the upload's progress as it stands once the file is saved."""

    seen: list[dict] = []

    def _save(self, name, content):
        saved = super()._save(name, content)
        current = progress.current()
        ProgressRecordingStorage.seen.append(current.snapshot() if current else {})
        return saved


def test_an_upload_reports_its_bytes_and_the_read_back_into_the_copys_progress(sqlite_source, settings, tmp_path):
    settings.STORAGES = {
        **settings.STORAGES,
        "nas": {"BACKEND": f"{__name__}.ProgressRecordingStorage", "OPTIONS": {"location": str(tmp_path / "nas")}},
    }
    ProgressRecordingStorage.seen = []
    target = target_update(target=sqlite_source.target, changes={"copy_storages": ["nas"]}, actor=SYSTEM)
    backup = backup_create(target=target, actor=SYSTEM)
    heard: list[tuple[str, dict]] = []

    with progress.watching(lambda run, snapshot: heard.append((run.label, snapshot))):
        [copy] = copies_upload(backup=backup, actor=SYSTEM)

    assert copy.status == CopyStatus.VERIFIED, copy.error
    [uploaded] = ProgressRecordingStorage.seen
    size = backup.size_bytes
    assert (uploaded["phase"], uploaded["done"], uploaded["total"], uploaded["unit"]) == (
        "upload nas",
        size,
        size,
        "bytes",
    )
    label, last = heard[-1]  # told once more at the end, whatever the ticks saw
    assert label == f"copy of backup #{backup.pk} to nas"
    assert (last["phase"], last["done"], last["total"], last["percent"]) == ("read back from nas", size, size, 100.0)


def test_an_upload_to_s3_reports_the_bytes_boto3_sent(sqlite_source, bucket, settings):
    settings.BACKUP_PROGRESS_SECONDS = 0.001
    target = _offsite(sqlite_source.target)
    backup = backup_create(target=target, actor=SYSTEM)
    heard: list[dict] = []

    with progress.watching(lambda run, snapshot: heard.append(snapshot)):
        [copy] = copies_upload(backup=backup, actor=SYSTEM)

    assert copy.status == CopyStatus.VERIFIED, copy.error
    uploads = [s["done"] for s in heard if s["phase"] == "upload offsite"]
    assert uploads == sorted(uploads) and all(0 <= done <= backup.size_bytes for done in uploads)
    assert heard[-1]["phase"] == "read back from offsite" and heard[-1]["done"] == backup.size_bytes


@pytest.mark.django_db(transaction=True)  # the upload's thread writes the row on a connection of its own
def test_an_upload_under_way_keeps_its_progress_on_the_copys_row_and_the_page_shows_it(
    sqlite_source, bucket, s3_server, settings, operator_client, api_client
):
    import os
    import sqlite3
    import threading

    from django.db import connection
    from django.urls import reverse

    settings.BACKUP_PROGRESS_SECONDS = 0.05
    target = _offsite(sqlite_source.target)
    [previous] = copies_upload(backup=backup_create(target=target, actor=SYSTEM), actor=SYSTEM)
    assert previous.status == CopyStatus.VERIFIED, previous.error
    # The previous copy of this target to this storage took ten hours, says its row: the estimate's source.
    BackupCopy.objects.filter(pk=previous.pk).update(duration_ms=36_000_000)
    with sqlite3.connect(sqlite_source.path) as conn:  # incompressible: the upload is as large as this
        conn.execute("CREATE TABLE blobs (data BLOB)")
        conn.executemany("INSERT INTO blobs VALUES (?)", [(os.urandom(1 << 20),) for _ in range(24)])
    backup = backup_create(target=target, actor=SYSTEM)
    assert backup.size_bytes > 24 << 20
    copy = backup.copies.get(storage="offsite")
    api = api_client("backups")  # the same client, also signed in: the page and the status API

    with FaultProxy("127.0.0.1", int(s3_server.rsplit(":", 1)[1])) as proxy:
        point_offsite_at(settings, f"http://{proxy.address}", bucket)
        proxy.hold_after(256 * 1024)  # the upload stalls in its middle until healed
        outcome: list[BackupCopy] = []

        def upload() -> None:
            try:
                outcome.extend(copies_upload(backup=backup, actor=SYSTEM))
            finally:
                connection.close()

        worker = threading.Thread(target=upload)
        worker.start()
        try:
            deadline = time.monotonic() + 60
            row = BackupCopy.objects.get(pk=copy.pk)
            while not (row.progress.get("phase") == "upload offsite" and row.progress.get("done")):
                assert worker.is_alive() and time.monotonic() < deadline, f"no upload progress on the row: {row}"
                time.sleep(0.02)
                row = BackupCopy.objects.get(pk=copy.pk)
            page = operator_client.get(reverse("backups:live")).content.decode()
            status = api.get("/api/deployment/backup/status").json()
        finally:
            proxy.heal()
            worker.join(timeout=120)

    assert row.status == CopyStatus.UPLOADING
    stored = row.progress
    assert (stored["unit"], stored["total"]) == ("bytes", backup.size_bytes)
    assert 0 < stored["done"] < backup.size_bytes
    # Time left: the previous copy's ten hours less the time spent so far.
    assert stored["leftMs"] == 36_000_000 - stored["elapsedMs"]
    assert f"copy of backup #{backup.pk} ({target.name}) to offsite" in page
    assert "upload offsite" in page and "about 9 h" in page
    # The status API lists the same run, with the progress it read from the row and the same words.
    [running] = [r for r in status["running"] if r["kind"] == "upload"]
    assert running["label"] == f"copy of backup #{backup.pk} ({target.name}) to offsite"
    assert running["progress"]["unit"] == "bytes" and running["progress"]["total"] == backup.size_bytes
    assert 0 < running["progress"]["done"] < backup.size_bytes
    assert running["line"].startswith("upload offsite ") and "about 9 h" in running["line"]
    [done] = outcome
    assert done.status == CopyStatus.VERIFIED, done.error
    assert BackupCopy.objects.get(pk=copy.pk).progress == {}  # a finished upload keeps no progress
