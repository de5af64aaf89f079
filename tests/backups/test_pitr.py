"""Point-in-time recovery through pgBackRest: a cluster of the suite's own whose WAL pgBackRest archives
(tests/backups/pitr_cluster.py), backups, the window, and a verification restoring to a time inside it.

pgBackRest's JSON is the real tool's output, captured from pgBackRest 2.45 (tests/backups/pgbackrest/).
"""

from __future__ import annotations

import json
import secrets
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from django.urls import reverse
from django.utils import timezone
from pyrage import x25519

from backups import engines
from backups.engines import pgbackrest
from backups.models import BackupStatus, BackupTarget, VerificationResult
from backups.selectors import readiness
from backups.services import InvalidBackupTarget, backup_create, backup_verify, target_create, target_update
from tests.backups.conftest import SYSTEM
from tests.backups.pitr_cluster import Cluster, pgbackrest_missing, processes_mentioning, scratch_postmasters

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(bool(pgbackrest_missing()), reason=pgbackrest_missing() or "pgbackrest is installed"),
]
CAPTURED = Path(__file__).parent / "pgbackrest"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """One cluster for the module: initdb, archive_mode on, stanza created; a shop table with rows."""
    root = Path(tempfile.mkdtemp(prefix="pitr-test-"))  # short: a socket path has a 107-byte limit
    cluster = Cluster(root, stanza="shop").start()
    with psycopg.connect(cluster.url(), autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE orders (id serial PRIMARY KEY, placed_at timestamptz NOT NULL DEFAULT clock_timestamp());"
            "INSERT INTO orders (placed_at) SELECT clock_timestamp() FROM generate_series(1, 100)"
        )
    yield cluster
    cluster.stop()


def repository(cluster: Cluster, **overrides: object) -> engines.Repository:
    values = {"stanza": cluster.stanza, "config": str(cluster.config), "os_user": cluster.os_user, **overrides}
    return engines.Repository(**values)  # type: ignore[arg-type]


def source(cluster: Cluster) -> engines.Database:
    return engines.from_url(cluster.url(), variable="TEST")


@pytest.fixture
def pitr_target(cluster, monkeypatch):
    env = f"PITR_{secrets.token_hex(3).upper()}"
    monkeypatch.setenv(env, cluster.url())
    data = {
        "name": f"pitr-{secrets.token_hex(3)}",
        "url_env": env,
        "kind": "pgbackrest",
        "pgbackrest_stanza": cluster.stanza,
        "pgbackrest_config": str(cluster.config),
        "os_user": cluster.os_user,
    }
    return target_create(data=data, actor=SYSTEM)


# --- pgbackrest info, as the real tool writes it ------------------------------------------------


def test_info_json_gives_the_backups_and_the_archived_wal_range():
    info = pgbackrest.parse_info((CAPTURED / "info.json").read_text(), "exp")
    assert [(b.label, b.type) for b in info.backups] == [
        ("20261202-143344F", "full"),
        ("20261202-143344F_20261202-143353D", "diff"),
    ]
    full = info.backups[0]
    assert full.stopped_at == datetime(2026, 12, 2, 14, 33, 51, tzinfo=UTC)
    assert (full.wal_start, full.wal_stop) == ("000000010000000000000002", "000000010000000000000002")
    assert full.size_bytes == 23287616 and full.repo_bytes == 3526076
    assert (info.archive_id, info.wal_min) == ("15-1", "000000010000000000000001")
    assert info.wal_max == "00000001000000000000000A"
    assert info.version == "15" and info.oldest == full
    # a restore to a time starts from the newest set that stopped before it
    assert info.set_for(datetime(2026, 12, 2, 14, 33, 52, tzinfo=UTC)) == full
    assert info.set_for(datetime(2026, 12, 2, 14, 40, tzinfo=UTC)) == info.backups[1]
    assert info.set_for(datetime(2026, 12, 2, 14, 33, 50, tzinfo=UTC)) is None


def test_info_json_of_a_stanza_without_backups_has_an_empty_window():
    info = pgbackrest.parse_info((CAPTURED / "info_no_backup.json").read_text(), "exp2")
    assert info.backups == [] and info.oldest is None and info.wal_max == ""


def test_info_json_of_a_missing_stanza_is_an_error_naming_it():
    with pytest.raises(engines.BackupError, match="stanza nope: missing stanza path"):
        pgbackrest.parse_info((CAPTURED / "info_missing_stanza.json").read_text(), "nope")
    with pytest.raises(engines.BackupError, match="does not list the stanza other"):
        pgbackrest.parse_info((CAPTURED / "info.json").read_text(), "other")
    with pytest.raises(engines.BackupError, match="did not answer JSON"):
        pgbackrest.parse_info("ERROR: [055]: unable to load info file", "exp")


def test_repo_ls_gives_the_time_the_newest_segment_was_archived():
    text = (CAPTURED / "repo_ls_archive.json").read_text()
    listing = json.loads(text)
    name = next(n for n in listing if n.startswith("000000010000000000000005-"))
    expected = datetime.fromtimestamp(listing[name]["time"], tz=UTC)
    assert pgbackrest.parse_wal_listing(text, "000000010000000000000005") == expected
    assert pgbackrest.parse_wal_listing(text, "0000000100000000000000FF") is None


def test_a_time_is_picked_on_the_earliest_unverified_day_inside_the_window():
    start = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)
    end = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
    for _ in range(50):
        when = pgbackrest.pick_time(start, end, missing_days=[date(2026, 11, 30), date(2026, 11, 29)])
        assert when.date() == date(2026, 11, 29)
        anywhere = pgbackrest.pick_time(start, end, missing_days=[date(2026, 11, 1)])  # outside: anywhere
        assert start < anywhere <= end
    with pytest.raises(engines.BackupError, match="window is empty"):
        pgbackrest.pick_time(end, start)


# --- bad settings --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({"pgbackrest_stanza": ""}, "pgbackrest_stanza", "needs its stanza"),
        ({"pgbackrest_stanza": "my stanza"}, "pgbackrest_stanza", "stanza name"),
        ({"url_env": ""}, "url_env", "URL variable of a database of its cluster"),
        ({"pgbackrest_config": "etc/pgbackrest.conf"}, "pgbackrest_config", "absolute path"),
        ({"pg_port": 70000}, "pg_port", "less than or equal to 65535"),
        ({"os_user": "Post Gres"}, "os_user", "user name"),
        ({"kind": "barman"}, "kind", "not a valid choice"),
        ({"copy_storages": ["offsite"]}, "copy_storages", "has no dump to copy"),
    ],
    ids=[
        "no-stanza",
        "bad-stanza",
        "no-url-variable",
        "relative-config",
        "bad-port",
        "bad-user",
        "bad-kind",
        "off-site-copies",
    ],
)
def test_bad_target_settings_are_refused_naming_the_field(data, field, message):
    values = {"name": "pitr-bad", "url_env": "SHOP_URL", "kind": "pgbackrest", "pgbackrest_stanza": "shop", **data}
    with pytest.raises(InvalidBackupTarget) as refused:
        target_create(data=values, actor=SYSTEM)
    assert refused.value.field == field and message in str(refused.value)
    assert not BackupTarget.objects.filter(name="pitr-bad").exists()


def test_the_kind_of_a_target_with_backups_cannot_change(pitr_target):
    pitr_target.backups.create(engine="pgbackrest", status=BackupStatus.FAILED, error="x")
    with pytest.raises(InvalidBackupTarget, match="add a new target instead"):
        target_update(target=pitr_target, changes={"kind": "dump"}, actor=SYSTEM)
    pitr_target.refresh_from_db()
    assert pitr_target.kind == "pgbackrest"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"config": "/nonexistent/pgbackrest.conf"}, "pgBackRest config /nonexistent/pgbackrest.conf does not exist"),
        ({"os_user": "no_such_user_here"}, "the OS user no_such_user_here does not exist"),
        ({"pg_path": "relative/data"}, "is not an absolute path"),
    ],
    ids=["missing-config", "unknown-user", "relative-data-dir"],
)
def test_bad_repository_settings_fail_before_pgbackrest_runs(overrides, message):
    with pytest.raises(engines.BackupError, match=message):
        pgbackrest.info(engines.Repository(stanza="shop", **overrides), timeout=30)


def test_a_backup_of_a_stanza_pgbackrest_does_not_know_fails_with_its_words(cluster, pitr_target):
    target_update(target=pitr_target, changes={"pgbackrest_stanza": "nostanza"}, actor=SYSTEM)
    backup = backup_create(target=BackupTarget.objects.get(pk=pitr_target.pk), actor=SYSTEM)
    assert backup.status == BackupStatus.FAILED
    assert "pgbackrest backup failed" in backup.error and "nostanza" in backup.error


# --- faults: nothing left behind ------------------------------------------------------------------


def test_a_restore_that_fails_leaves_no_scratch_directory_and_no_server(cluster):
    repo = repository(cluster)
    if not pgbackrest.info(repo, timeout=60).backups:
        pgbackrest.backup(repo, kind="full", timeout=300)
    scratches: list[str] = []
    before_any_backup = datetime(2000, 1, 1, tzinfo=UTC)
    outcome = engines.PitrVerifier(
        repo=repo, source=source(cluster), target_time=before_any_backup, timeout=120, on_scratch=scratches.append
    ).run()
    assert outcome.failed is not None and outcome.failed.name == "restore"
    assert "unable to find backup set with stop time less than" in outcome.failed.detail
    assert scratches and not Path(scratches[0]).exists() and outcome.scratch_dropped
    assert scratch_postmasters(scratches[0]) == []


def test_the_scratch_is_named_and_recorded_before_it_is_made_and_made_private(cluster, tmp_path):
    """A worker dying between recording the scratch and making it leaves a name the janitor can remove, never
    a directory no one knows of: the name is recorded first, then the directory is made (0o700)."""
    import os
    import stat

    repo = repository(cluster)
    if not pgbackrest.info(repo, timeout=60).backups:
        pgbackrest.backup(repo, kind="full", timeout=300)
    recorded: list[tuple[str, bool]] = []
    modes: list[int] = []

    def alongside() -> None:  # runs beside the restore and is joined before the scratch is removed
        deadline = time.monotonic() + 60
        while not (recorded and os.path.isdir(recorded[0][0])) and time.monotonic() < deadline:
            time.sleep(0.01)
        modes.append(stat.S_IMODE(os.stat(recorded[0][0]).st_mode))

    outcome = engines.PitrVerifier(
        repo=repo, source=source(cluster), target_time=datetime(2000, 1, 1, tzinfo=UTC), timeout=120,
        scratch_parent=str(tmp_path), on_scratch=lambda path: recorded.append((path, Path(path).exists())),
        alongside=alongside,
    ).run()  # fmt: skip

    [(path, existed)] = recorded
    assert not existed, "the scratch was made before it was recorded"
    assert Path(path).parent == tmp_path and Path(path).name.startswith(pgbackrest.SCRATCH_PREFIX)
    assert modes == [0o700]
    assert outcome.failed is not None and outcome.failed.name == "restore" and outcome.scratch_dropped
    assert list(tmp_path.iterdir()) == []

    # The record fails (the control plane's database gone): nothing is made, so nothing is left.
    def cannot_record(path: str) -> None:
        raise engines.BackupError("could not record the scratch")

    outcome = engines.PitrVerifier(
        repo=repo, source=source(cluster), target_time=datetime(2000, 1, 1, tzinfo=UTC), timeout=120,
        scratch_parent=str(tmp_path), on_scratch=cannot_record,
    ).run()  # fmt: skip
    assert outcome.failed is not None and outcome.failed.name == "setup" and outcome.scratch_dropped
    assert list(tmp_path.iterdir()) == []


def test_a_scratch_server_left_running_is_stopped_and_removed(cluster, tmp_path):
    """What a worker killed mid-verification leaves (a started scratch): the janitor stops it and removes it."""
    scratch = Path(tempfile.mkdtemp(prefix="verify_pitr_"))
    cluster._own(scratch)
    cluster.run(str(cluster.bin / "initdb"), "-D", str(scratch / "data"), "-A", "trust", "--no-sync")
    port = pgbackrest.free_port()
    options = f"-c port={port} -c listen_addresses='' -c unix_socket_directories='{scratch}'"
    pg_ctl = str(cluster.bin / "pg_ctl")
    cluster.run(pg_ctl, "-D", str(scratch / "data"), "-l", "/dev/null", "-w", "-o", options, "start")
    assert scratch_postmasters(scratch)
    assert engines.remove_scratch(str(scratch)) is True
    assert not scratch.exists() and scratch_postmasters(scratch) == []
    with pytest.raises(engines.BackupError, match="not a point-in-time scratch"):
        engines.remove_scratch(str(tmp_path))


def test_pgbackrest_that_hangs_is_stopped_at_the_timeout_with_its_helpers(cluster):
    """Archiving broken: ``pgbackrest check`` waits for a WAL segment that never comes; it is killed."""
    with psycopg.connect(cluster.url(), autocommit=True) as conn:
        # pgbackrest check insists its name is in the command: this one names it and fails every time
        conn.execute("ALTER SYSTEM SET archive_command = '/bin/false pgbackrest'")
        conn.execute("SELECT pg_reload_conf()")
    try:
        time.sleep(0.5)
        # pgBackRest's own archive-timeout is 60 s: the 3 s deadline is ours, and it stopped the command
        with pytest.raises(engines.BackupError, match="pgbackrest check did not finish within 3 s and was stopped"):
            pgbackrest.archive_now(repository(cluster), source(cluster), timeout=3)
        assert [pid for pid in processes_mentioning(f"--config={cluster.config}") if _is_check(pid)] == []
    finally:
        with psycopg.connect(cluster.url(), autocommit=True) as conn:
            conn.execute("ALTER SYSTEM RESET archive_command")
            conn.execute("SELECT pg_reload_conf()")
    cluster.wait_archived()  # archiving works again


def _is_check(pid: int) -> bool:
    try:
        return b"check" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


# --- end to end: backup, info, point-in-time verification -----------------------------------------


def test_backups_window_and_a_point_in_time_verification_end_to_end(
    cluster, pitr_target, operator_client, api_client, settings
):
    # Dumps would be encrypted with age; a pgBackRest set is not a dump: neither encrypted nor copied.
    settings.BACKUP_AGE_RECIPIENTS = [str(x25519.Identity.generate().to_public())]
    full = backup_create(target=pitr_target, actor=SYSTEM)
    assert full.status == BackupStatus.SUCCEEDED, full.error
    assert full.engine == "pgbackrest" and full.manifest["type"] == "full" and full.file == ""
    assert not full.encrypted and not full.copies.exists()
    with psycopg.connect(cluster.url(), autocommit=True) as conn:
        conn.execute("INSERT INTO orders (placed_at) SELECT clock_timestamp() FROM generate_series(1, 50)")
    diff = backup_create(target=pitr_target, actor=SYSTEM)
    assert diff.status == BackupStatus.SUCCEEDED, diff.error
    assert diff.manifest["type"] == "diff" and diff.manifest["label"].startswith(full.manifest["label"] + "_")

    pitr_target.refresh_from_db()
    assert pitr_target.pitr_window_start is not None and pitr_target.pitr_window_end is not None
    assert pitr_target.pitr_window_start <= datetime.fromisoformat(full.manifest["stoppedAt"])
    assert pitr_target.pitr_window_end >= datetime.fromisoformat(diff.manifest["stoppedAt"])

    verification = backup_verify(backup=diff, actor=SYSTEM)
    assert verification.status == VerificationResult.PASSED, verification.checks
    names = [check["name"] for check in verification.checks]
    assert names == ["restore", "recovered_to_time", "row_counts", "schema", "integrity"]
    assert all(check["status"] in ("pass", "skip") for check in verification.checks)
    assert pitr_target.pitr_window_start < verification.target_time <= timezone.now()
    recovered = next(check for check in verification.checks if check["name"] == "recovered_to_time")
    assert f"recovered to {verification.target_time:%Y-%m-%d %H:%M:%S} UTC" in recovered["detail"]
    assert verification.scratch and not Path(verification.scratch).exists() and verification.scratch_dropped
    assert scratch_postmasters(verification.scratch) == []
    assert verification.restore_ms and verification.restore_ms > 0

    state = readiness(BackupTarget.objects.get(pk=pitr_target.pk))
    assert state.pitr and state.rpo_seconds is not None and state.missing_days == [] and state.latest_verified == diff

    page = operator_client.get(reverse("backups:index")).content.decode()
    assert "newest WAL" in page and "recoverable" in page
    detail = operator_client.get(reverse("backups:target", args=[pitr_target.name])).content.decode()
    assert f"pgBackRest stanza {cluster.stanza}" in detail and diff.manifest["label"] in detail
    assert "the set lives in the stanza's pgBackRest repository" in detail and "(age)" not in detail
    api = api_client("backups")
    body = api.get("/api/deployment/backup/status").json()
    row = next(t for t in body["targets"] if t["target"] == pitr_target.name)
    assert row["pointInTime"]["windowStart"] and row["pointInTime"]["rpoSeconds"] is not None
    assert row["latestVerification"]["targetTime"] == verification.target_time.isoformat()
    assert row["latestBackup"]["pgbackrest"]["label"] == diff.manifest["label"]
    assert row["storages"] == [] and row["latestBackup"]["copies"] == [] and not row["latestBackup"]["encrypted"]
    assert row["latestVerification"]["storage"] is None
    body = api.get("/api/deployment/backup/recovery-readiness").json()
    row = next(t for t in body["targets"] if t["target"] == pitr_target.name)
    assert row["ready"] and row["windowComplete"] and row["pointInTime"]["windowEnd"]


def test_a_schema_changed_after_the_target_time_fails_its_check_and_the_other_checks_still_report(cluster):
    """The row, schema and integrity checks run together: one failing does not hide the others, and the
    amcheck extension the integrity check may create does not show in the schema (dumped from a snapshot
    taken before). The verifier asked to leave its directory stops the scratch server and leaves the
    removal to its caller."""
    repo = repository(cluster)
    if not pgbackrest.info(repo, timeout=60).backups:
        pgbackrest.backup(repo, kind="full", timeout=300)
    name = f"drift_{secrets.token_hex(3)}"
    with psycopg.connect(cluster.url(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    with psycopg.connect(cluster.url(name), autocommit=True) as conn:
        conn.execute("CREATE TABLE before_the_target (id int); INSERT INTO before_the_target VALUES (1)")
    time.sleep(1.2)
    when = datetime.now(UTC).replace(microsecond=0)
    time.sleep(1.2)
    with psycopg.connect(cluster.url(name), autocommit=True) as conn:
        conn.execute("CREATE TABLE after_the_target (id int)")
    drifted = engines.from_url(cluster.url(name), variable="TEST")
    scratches: list[str] = []
    outcome = engines.PitrVerifier(
        repo=repo,
        source=drifted,
        target_time=when,
        timeout=120,
        on_scratch=scratches.append,
        alongside=lambda: pgbackrest.archive_now(repo, drifted, timeout=60),
        leave_directory=True,
    ).run()
    by_name = {check.name: check for check in outcome.checks}
    assert list(by_name) == ["restore", "recovered_to_time", "row_counts", "schema", "integrity"], outcome.checks
    assert outcome.failed is not None and outcome.failed.name == "schema"
    assert "after_the_target" in by_name["schema"].detail and "amcheck" not in by_name["schema"].detail
    assert by_name["integrity"].status == "pass", by_name["integrity"]
    assert by_name["row_counts"].status == "pass" and "1 tables read, 1 rows" in by_name["row_counts"].detail
    # Stopped, not removed: the caller removes it once the verdict is recorded.
    assert not outcome.scratch_dropped and Path(scratches[0]).is_dir()
    assert scratch_postmasters(scratches[0]) == []
    assert engines.remove_scratch(scratches[0]) is True and not Path(scratches[0]).exists()


# --- restore drills of a pgBackRest target ----------------------------------------------------------


def test_a_plan_drilled_on_a_pgbackrest_target_restores_its_newest_set_to_the_end_of_the_wal_in_a_scratch(
    cluster, pitr_target
):
    """The drill restores the latest set plus all the WAL archived after it, runs the smoke query on that
    scratch (rows committed after the set are there), measures the RTO and removes the scratch; a smoke
    query that fails (here: one that writes) fails the drill at that check, and the scratch still goes."""
    from backups.drills import drill_create
    from backups.models import DrillStatus
    from tests.backups.test_drills import make_plan

    repo = repository(cluster)
    if not pgbackrest.info(repo, timeout=60).backups:
        pgbackrest.backup(repo, kind="full", timeout=300)
    newest = pgbackrest.info(repo, timeout=60).backups[-1]
    backup = pitr_target.backups.create(
        engine="pgbackrest", status=BackupStatus.SUCCEEDED, manifest={"label": newest.label, "type": newest.type}
    )
    pitr_target.backups.create(engine="pgbackrest", status=BackupStatus.FAILED, error="x")  # never restored
    with psycopg.connect(cluster.url(), autocommit=True) as conn:  # after the set: only in the archived WAL
        conn.execute("INSERT INTO orders (placed_at) SELECT clock_timestamp() FROM generate_series(1, 7)")
        [(orders,)] = conn.execute("SELECT count(*) FROM orders").fetchall()
    pgbackrest.archive_now(repo, source(cluster), timeout=60)
    plan = make_plan(pitr_target, smoke_queries=["SELECT count(*) FROM orders"])

    drill = drill_create(plan_name=plan.failure_type, actor=SYSTEM)

    assert drill.status == DrillStatus.PASSED, drill.error
    assert drill.backup_id == backup.pk
    assert [check["name"] for check in drill.checks] == ["restore", "smoke_1"]
    restore, smoke = drill.checks
    assert restore["detail"].startswith(f"restored to the end of the archived WAL from {newest.label}")
    assert smoke["detail"].startswith(f"answered ({orders},)")
    assert drill.rto_ms is not None and drill.rto_ms >= restore["ms"]
    assert Path(drill.scratch).name.startswith(pgbackrest.SCRATCH_PREFIX) and drill.scratch_dropped
    assert not Path(drill.scratch).exists() and scratch_postmasters(drill.scratch) == []

    plan.smoke_queries = ["DELETE FROM orders RETURNING id"]
    plan.save()
    failed = drill_create(plan_name=plan.failure_type, actor=SYSTEM)

    assert failed.status == DrillStatus.FAILED and failed.rto_ms is None
    assert failed.error.startswith("smoke_1: ") and "read-only transaction" in failed.error
    assert failed.scratch != drill.scratch and failed.scratch_dropped
    assert not Path(failed.scratch).exists() and scratch_postmasters(failed.scratch) == []
    with psycopg.connect(cluster.url(), autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM orders").fetchall() == [(orders,)]


def test_a_drill_of_a_pgbackrest_target_without_a_backup_fails_at_setup(pitr_target):
    from backups.drills import drill_create
    from tests.backups.test_drills import make_plan

    pitr_target.backups.create(engine="pgbackrest", status=BackupStatus.FAILED, error="x")
    plan = make_plan(pitr_target, smoke_queries=["SELECT 1"])
    drill = drill_create(plan_name=plan.failure_type, actor=SYSTEM)
    assert drill.status == "failed" and drill.backup is None and drill.scratch == ""
    assert drill.error == f"setup: target {pitr_target.name} has no pgBackRest backup to restore"


def test_the_janitor_removes_the_scratch_directory_a_finished_pgbackrest_drill_left(pitr_target, tmp_path):
    from backups.drills import reap_stale_drills
    from backups.models import Drill, DrillStatus

    left = tmp_path / f"{pgbackrest.SCRATCH_PREFIX}{secrets.token_hex(8)}"
    (left / "data").mkdir(parents=True)
    (left / "data" / "PG_VERSION").write_text("16\n")
    drill = Drill.objects.create(
        plan="pitr_plan", target=pitr_target, status=DrillStatus.FAILED, finished_at=timezone.now(), scratch=str(left)
    )

    reap_stale_drills()

    assert not left.exists()
    drill.refresh_from_db()
    assert drill.scratch_dropped


def test_readiness_counts_a_day_only_when_a_restore_to_a_time_on_it_passed(pitr_target):
    now = timezone.now()
    BackupTarget.objects.filter(pk=pitr_target.pk).update(
        created_at=now - timedelta(days=10), pitr_window_start=now - timedelta(days=9), pitr_window_end=now
    )
    target = BackupTarget.objects.get(pk=pitr_target.pk)
    unproven = readiness(target, now=now)
    assert not unproven.ready and "no verified point-in-time restore" in unproven.problems
    backup = target.backups.create(
        engine="pgbackrest", status=BackupStatus.SUCCEEDED, verification=VerificationResult.PASSED
    )
    for days_ago in (1, 2, 4):  # 3, 5 and 6 days ago have no verified restore; one failed 5 days ago
        backup.verifications.create(status=VerificationResult.PASSED, target_time=now - timedelta(days=days_ago))
    backup.verifications.create(status=VerificationResult.FAILED, target_time=now - timedelta(days=5))
    state = readiness(target, now=now)
    assert state.missing_days == [(now - timedelta(days=d)).date() for d in (6, 5, 3)]
    assert state.rpo_met and not state.ready
    assert "3 day(s) of the 7-day window unverified" in "; ".join(state.problems)
    stale = readiness(target, now=now + timedelta(hours=target.rpo_hours + 1))
    assert not stale.rpo_met and any("newest archived WAL is" in problem for problem in stale.problems)
    for days_ago in (3, 5, 6):
        backup.verifications.create(status=VerificationResult.PASSED, target_time=now - timedelta(days=days_ago))
    assert readiness(target, now=now).ready


def test_run_due_reads_the_window_and_verifies_a_pgbackrest_target_daily(
    cluster, pitr_target, django_capture_on_commit_callbacks
):
    """A dump is verified once; a pgBackRest target every day (each run restores to another time)."""
    from backups.tasks import run_due

    BackupTarget.objects.exclude(pk=pitr_target.pk).update(enabled=False)
    repo = repository(cluster)
    if not pgbackrest.info(repo, timeout=60).backups:
        pgbackrest.backup(repo, kind="full", timeout=300)
    backup = pitr_target.backups.create(
        engine="pgbackrest", status=BackupStatus.SUCCEEDED, verification=VerificationResult.PASSED
    )
    backup.verifications.create(status=VerificationResult.PASSED, started_at=timezone.now() - timedelta(hours=21))
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        summary = run_due()
    assert summary["verifications"] == [backup.pk] and summary["backups"] == [] and len(callbacks) == 1
    pitr_target.refresh_from_db()
    assert pitr_target.pitr_window_start is not None and pitr_target.pitr_window_end is not None
    assert pitr_target.pitr_checked_at is not None and pitr_target.pitr_error == ""
    backup.verifications.create(status=VerificationResult.PASSED, started_at=timezone.now())
    with django_capture_on_commit_callbacks(execute=False):
        assert run_due()["verifications"] == []  # verified today already


def test_a_repository_pgbackrest_cannot_read_is_kept_as_the_targets_error(cluster, pitr_target):
    from backups import pitr

    BackupTarget.objects.filter(pk=pitr_target.pk).update(pgbackrest_stanza="gone")
    target = BackupTarget.objects.get(pk=pitr_target.pk)
    assert pitr.refresh(target) is None
    target.refresh_from_db()
    assert "stanza gone" in target.pitr_error and target.pitr_window_end is None
    assert any(problem == "pgBackRest stanza gone: missing stanza path" for problem in readiness(target).problems)


def test_the_restored_schema_is_read_as_of_the_snapshot_taken_before_the_checks_start(cluster):
    """What a check creates once the snapshot is taken (pg_amcheck's extension) is not in the schema read;
    read without the snapshot, it is: the verification compares the restored schema, not its own traces."""
    name = f"snap_{secrets.token_hex(3)}"
    with psycopg.connect(cluster.url(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    db = engines.from_url(cluster.url(name), variable="TEST")
    with pgbackrest._snapshot(db) as snapshot, psycopg.connect(cluster.url(name), autocommit=True) as conn:
        conn.execute("CREATE EXTENSION amcheck; CREATE TABLE made_during_the_checks (id int)")
        as_of_snapshot = pgbackrest._dump_schema(db, timeout=60, snapshot=snapshot)
        now = pgbackrest._dump_schema(db, timeout=60)
    assert "amcheck" not in as_of_snapshot and "made_during_the_checks" not in as_of_snapshot
    assert "CREATE EXTENSION IF NOT EXISTS amcheck" in now and "made_during_the_checks" in now
    with pytest.raises(engines.BackupError, match="cannot connect"):
        with pgbackrest._snapshot(engines.from_url(cluster.url(f"{name}_missing"), variable="TEST")):
            pass
