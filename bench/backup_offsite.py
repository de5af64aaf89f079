"""Cost of encrypting backups at rest and of copying them off-site, each as a ratio against a peer in the same run.

The source is the backup bench's generated database (``bench/backups.py``: about 269 MiB by
``pg_database_size``; built there if missing or stale, kept between runs). ``--source-db NAME`` builds and
uses another one instead (``--scale`` shrinks its rows; such a database is dropped at the end), for a
machine shared with someone running the other bench. The control plane runs in this process on its
own database ``bench_offsite_cp_<random>``, dropped at the end.

1. Encryption: ``backups.services.backup_create`` with ``BACKUP_AGE_RECIPIENTS`` set (pg_dump streamed
   through pyrage's age encryptor into the file, both sides hashed) against the same call without
   recipients (the unencrypted backup). Goal: ratio encrypted/unencrypted <= 1.15.

2. Upload: the encrypted dump uploaded to moto's S3-compatible server (started here on 127.0.0.1)
   through the "offsite" storage (django-storages' S3 storage, as ``backups.copies`` uploads) against
   boto3's ``upload_file`` of the same file to the same bucket. Goal: throughput ratio ours/peer >= 0.8
   (peer seconds / our seconds). The whole copy (upload, then read back and hashed: what makes it count)
   is printed as well, against the same peer, for information: it moves the bytes twice.

Rounds alternate peer, ours (``--rounds``, default 3 each); medians are compared. Exit status 0 even when
a goal is missed ("MISSED" is printed); 1 when a backup or an upload fails; 2 when a service is missing.
"""

from __future__ import annotations

import argparse
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import backups as base  # noqa: E402  (the source database and its helpers)

ENCRYPT_GOAL = 1.15
UPLOAD_GOAL = 0.8
MiB = 1024 * 1024
CONTROL_DB = f"bench_offsite_cp_{secrets.token_hex(4)}"
KEYS = {"aws_access_key_id": "bench", "aws_secret_access_key": "bench", "region_name": "us-east-1"}


def configure_environment(var_dir: Path, source_db: str) -> None:
    var_dir.mkdir(parents=True, exist_ok=True)
    os.environ["DJANGO_SETTINGS_MODULE"] = "controlplane.settings"
    os.environ["CONTROLPLANE_VAR_DIR"] = str(var_dir)
    os.environ["DATABASE_URL"] = f"postgres://{base.USER}@{base.HOST}:{base.PORT}/{CONTROL_DB}"
    os.environ[base.URL_ENV] = f"postgres://{base.USER}@{base.HOST}:{base.PORT}/{source_db}"
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    for name in ("BACKUP_DIR", "BACKUP_TMP_DIR", "BACKUP_SCRATCH_DATABASE_URL", "BACKUP_AGE_RECIPIENTS"):
        os.environ.pop(name, None)
    for name in ("BACKUP_S3_BUCKET", "BACKUP_S3_ENDPOINT_URL", "BACKUP_S3_ACCESS_KEY_ID"):
        os.environ.pop(name, None)


def start_moto(log: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    handle = open(log, "wb")  # noqa: SIM115 - the server's output, for as long as it runs
    process = subprocess.Popen(  # noqa: S603 - our interpreter, fixed arguments
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], stdout=handle, stderr=handle
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return process, f"http://127.0.0.1:{port}"
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                base.fail(f"moto's server did not start (see {log}); install requirements-dev.txt")
            time.sleep(0.2)


def setup_control_plane(endpoint: str, bucket: str) -> Any:
    from django.conf import settings

    from controlplane.settings import s3_backup_storage

    base.create_database(CONTROL_DB)
    import django

    django.setup()
    from django.core.management import call_command

    from backups import services
    from controlplane.audit import Actor

    call_command("migrate", verbosity=0)
    settings.STORAGES = {
        **settings.STORAGES,
        "offsite": s3_backup_storage(
            bucket=bucket,
            prefix="bench",
            endpoint_url=endpoint,
            region="us-east-1",
            access_key="bench",
            secret_key="bench",  # noqa: S106 - moto's server takes any key
            timeout=120,
        ),
    }
    return services.target_create(data={"name": "bench", "url_env": base.URL_ENV}, actor=Actor.system("bench"))


def timed_backup(target: Any, recipients: list[str]) -> tuple[float, Any]:
    from django.conf import settings

    from backups import services
    from backups.models import BackupStatus
    from controlplane.audit import Actor

    settings.BACKUP_AGE_RECIPIENTS = recipients
    base.checkpoint()
    start = time.perf_counter()
    backup = services.backup_create(target=target, actor=Actor.system("bench"))
    seconds = time.perf_counter() - start
    if backup.status != BackupStatus.SUCCEEDED:
        base.fail(f"backup failed: {backup.error}", 1)
    return seconds, backup


def peer_upload(client: Any, path: Path, bucket: str, key: str) -> float:
    start = time.perf_counter()
    client.upload_file(str(path), bucket, key)
    seconds = time.perf_counter() - start
    client.delete_object(Bucket=bucket, Key=key)
    return seconds


def our_upload(path: Path, name: str) -> float:
    """The upload step of a copy: the file handed to the "offsite" storage (django-storages on boto3)."""
    from django.core.files.storage import storages

    from backups.copies import LocalFile

    store = storages["offsite"]
    start = time.perf_counter()
    with open(path, "rb") as handle:
        stored = store.save(name, LocalFile(handle, path))  # as backups.copies hands it over
    seconds = time.perf_counter() - start
    store.delete(stored)
    return seconds


def our_copy(backup: Any) -> float:
    """The whole copy as the worker makes it: upload, read back, compare, record."""
    from backups.copies import copy_upload
    from backups.models import BackupCopy, CopyStatus
    from controlplane.audit import Actor

    copy, _ = BackupCopy.objects.get_or_create(backup=backup, storage="offsite")
    BackupCopy.objects.filter(pk=copy.pk).update(status=CopyStatus.PENDING, next_attempt_at=None)
    start = time.perf_counter()
    copy = copy_upload(copy=copy, actor=Actor.system("bench"))
    seconds = time.perf_counter() - start
    if copy.status != CopyStatus.VERIFIED:
        base.fail(f"copy failed: {copy.error}", 1)
    return seconds


def report(rows: list[tuple[str, float, float, str]]) -> None:
    for label, ours, peer, verdict in rows:
        print(f"{label:<58} ours {ours:7.2f} s  peer {peer:7.2f} s  {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--source-db", default=base.SOURCE_DB, help="source database (built if missing)")
    parser.add_argument("--scale", type=float, default=1.0, help="rows of a --source-db built here, as a fraction")
    args = parser.parse_args()
    own_source = args.source_db != base.SOURCE_DB
    var_dir = Path(tempfile.gettempdir()) / f"controlplane-bench-offsite-{secrets.token_hex(4)}"
    configure_environment(var_dir, args.source_db)
    base.SOURCE_DB = args.source_db  # the base bench's helpers build and read this one
    if own_source:
        for name in ("USERS", "SESSIONS", "MESSAGES"):
            setattr(base, name, max(1000, int(getattr(base, name) * args.scale)))
        base.MIN_BYTES = 1
    if not base.source_is_ready():
        print(f"building the source database {args.source_db} ...", flush=True)
        print(f"built in {base.generate_source():.0f} s", flush=True)
    size = base.database_size(args.source_db)
    base.table_rows()
    moto, endpoint = start_moto(var_dir / "moto.log")
    bucket = f"bench-{secrets.token_hex(4)}"
    try:
        import boto3
        from pyrage import x25519

        client = boto3.client("s3", endpoint_url=endpoint, **KEYS)
        client.create_bucket(Bucket=bucket)
        target = setup_control_plane(endpoint, bucket)
        recipients = [str(x25519.Identity.generate().to_public())]

        plain_s, encrypted_s, backups = [], [], []
        for _ in range(args.rounds):
            seconds, backup = timed_backup(target, [])
            plain_s.append(seconds)
            seconds, backup = timed_backup(target, recipients)
            encrypted_s.append(seconds)
            backups.append(backup)
        from backups import services

        latest = backups[-1]
        path = Path(services.storage().path(latest.file))
        peer_s, upload_s, copy_s = [], [], []
        for _ in range(args.rounds):
            peer_s.append(peer_upload(client, path, bucket, "bench/peer.age"))
            upload_s.append(our_upload(path, "bench/ours.age"))
            copy_s.append(our_copy(latest))
    finally:
        moto.terminate()
        moto.wait(timeout=10)
        base.drop_database(CONTROL_DB)
        if own_source:
            base.drop_database(args.source_db)
        import shutil

        shutil.rmtree(var_dir, ignore_errors=True)

    ratio_e = statistics.median(encrypted_s) / statistics.median(plain_s)
    ratio_u = statistics.median(peer_s) / statistics.median(upload_s)
    ratio_c = statistics.median(peer_s) / statistics.median(copy_s)
    mib = latest.size_bytes / MiB
    print(f"source {size / MiB:.0f} MiB by pg_database_size; encrypted dump {mib:.0f} MiB; rounds {args.rounds}")
    report(
        [
            (
                "encrypted backup (peer: the same backup unencrypted)",
                statistics.median(encrypted_s),
                statistics.median(plain_s),
                f"ratio {ratio_e:.3f}x (goal <= {ENCRYPT_GOAL}) {'ok' if ratio_e <= ENCRYPT_GOAL else 'MISSED'}",
            ),
            (
                f"upload {mib:.0f} MiB (peer: boto3 upload_file)",
                statistics.median(upload_s),
                statistics.median(peer_s),
                f"throughput ratio {ratio_u:.3f} (goal >= {UPLOAD_GOAL}) "
                + ("ok" if ratio_u >= UPLOAD_GOAL else "MISSED"),
            ),
            (
                "whole copy: upload + read back (peer: upload_file)",
                statistics.median(copy_s),
                statistics.median(peer_s),
                f"throughput ratio {ratio_c:.3f} (information: the bytes go twice)",
            ),
        ]
    )
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
