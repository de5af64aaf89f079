"""The backup gate: a migration runs only when its database's latest verified backup is younger than the
target's RPO (or, with take_backup, once it has taken and verified one). Real backups of a small SQLite
database (and one PostgreSQL round), run by the runner in-process."""

from __future__ import annotations

import secrets
from datetime import timedelta

import pytest
from django.utils import timezone

from backups.models import Backup, BackupStatus, Verification, VerificationResult
from backups.services import backup_create, backup_verify, target_create
from controlplane.audit import Actor
from deployments.models import Deployment, DeploymentStatus, Phase, Pipeline, StepRun, StepStatus
from deployments.runner import run
from deployments.services import InvalidDeployment, deployment_request, pipeline_save
from tests.backups.conftest import make_sqlite, pg_server, pg_source, point_backups_at
from tests.deployments.conftest import cmd, echo

pytestmark = [pytest.mark.django_db(transaction=True)]  # the runner closes its connection when it ends
SYSTEM = Actor.system("tests")


__all__ = ["pg_server", "pg_source"]  # fixtures of the backup tests, for the PostgreSQL round


@pytest.fixture(autouse=True)
def backup_storage(settings, tmp_path):
    """Backups stored under tmp_path; scratch databases on the source's own server."""
    point_backups_at(settings, tmp_path / "backups", tmp_path / "partial")
    settings.BACKUP_SCRATCH_DATABASE_URL = ""
    settings.PG_BIN_DIR = ""


@pytest.fixture
def target(tmp_path, monkeypatch):
    """A backup target: a small SQLite database (1300 rows)."""
    label = secrets.token_hex(4)
    path = make_sqlite(tmp_path / "source" / "app.sqlite3")
    env = f"GATE_SRC_{label.upper()}"
    monkeypatch.setenv(env, f"sqlite:///{path}")
    return target_create(data={"name": f"gate-{label}", "url_env": env}, actor=SYSTEM)


def migration(marker, **extra):
    """A migrate step that leaves ``marker`` behind when it runs."""
    code = f"open({str(marker)!r}, 'w').write('migrated')"
    return {"name": "migrate", "kind": "migrate", "argv": ["{python}", "-c", code], **extra}


def deploy_with(environment, steps) -> Deployment:
    environment(steps)
    deployment = deployment_request(environment="test", version="v1", actor=SYSTEM)
    run(deployment.pk)
    deployment.refresh_from_db()
    return deployment


def step_run(deployment, name, phase=Phase.FORWARD) -> StepRun:
    return StepRun.objects.get(deployment=deployment, name=name, phase=phase)


def verified_backup(target, *, hours_ago: float = 0) -> Backup:
    backup = backup_create(target=target, actor=SYSTEM)
    verification = backup_verify(backup=backup, actor=SYSTEM)
    assert verification.status == VerificationResult.PASSED, verification.checks
    if hours_ago:
        Backup.objects.filter(pk=backup.pk).update(started_at=timezone.now() - timedelta(hours=hours_ago))
    backup.refresh_from_db()
    return backup


def test_a_migration_is_refused_with_a_stale_backup_and_nothing_runs(environment, target, tmp_path):
    stale = verified_backup(target, hours_ago=30)  # the target's RPO is 26 h
    marker = tmp_path / "migrated"
    deployment = deploy_with(environment, [echo("before", "first"), migration(marker, backup_target=target.name)])

    assert deployment.status == DeploymentStatus.FAILED
    refused = step_run(deployment, "migrate")
    assert refused.status == StepStatus.FAILED and refused.output == ""
    assert refused.error.startswith(
        f"backup gate: the latest verified backup of {target.name}, #{stale.pk} taken "
        f"{stale.started_at:%Y-%m-%d %H:%M} UTC, is 30.0 h old, older than the target's RPO of 26 h: "
    )
    assert f'"python manage.py backup {target.name}"' in refused.error
    assert f'"python manage.py verify_backup --latest {target.name}"' in refused.error
    assert "set take_backup: true" in refused.error
    assert deployment.error == f"step migrate failed: {refused.error}"
    assert not marker.exists()  # the migration never started
    assert Backup.objects.count() == 1  # and the gate took no backup of its own


def test_a_migration_is_refused_without_a_verified_backup_naming_the_unverified_one(environment, target, tmp_path):
    unverified = backup_create(target=target, actor=SYSTEM)
    assert unverified.status == BackupStatus.SUCCEEDED
    marker = tmp_path / "migrated"
    deployment = deploy_with(environment, [migration(marker, backup_target=target.name)])

    assert deployment.status == DeploymentStatus.FAILED
    error = step_run(deployment, "migrate").error
    assert error.startswith(
        f"backup gate: target {target.name} has no verified backup "
        f"(backup #{unverified.pk} of {unverified.started_at:%Y-%m-%d %H:%M} UTC is not verified): run "
    )
    assert not marker.exists()


def test_a_migration_is_refused_when_its_target_does_not_exist(environment, target, tmp_path):
    marker = tmp_path / "migrated"
    deployment = deploy_with(environment, [migration(marker, backup_target="nowhere")])
    error = step_run(deployment, "migrate").error
    assert error.startswith("backup gate: no backup target named 'nowhere' (targets: ")
    assert target.name in error and error.endswith("set backup_target")
    assert not marker.exists()


def test_a_migration_proceeds_with_a_fresh_verified_backup_and_its_log_names_it(environment, target, tmp_path):
    fresh = verified_backup(target, hours_ago=2)
    verification = Verification.objects.get(backup=fresh)
    marker = tmp_path / "migrated"
    deployment = deploy_with(environment, [migration(marker, backup_target=target.name)])

    assert deployment.status == DeploymentStatus.SUCCEEDED
    assert marker.read_text() == "migrated"
    output = step_run(deployment, "migrate").output
    assert output.startswith(
        f"backup gate passed: backup #{fresh.pk} of {target.name}, taken {fresh.started_at:%Y-%m-%d %H:%M:%S} UTC "
        f"(2.00 h old, RPO 26 h), {fresh.size_bytes} bytes, sha256 {fresh.sha256[:16]}; "
        f"verification #{verification.pk} passed at "
    )
    assert "checks checksum, restore, row_counts, schema, integrity" in output


def test_take_backup_takes_and_verifies_one_then_proceeds(environment, target, tmp_path):
    verified_backup(target, hours_ago=40)  # stale: without take_backup the gate would refuse
    marker = tmp_path / "migrated"
    deployment = deploy_with(environment, [migration(marker, backup_target=target.name, take_backup=True)])

    assert deployment.status == DeploymentStatus.SUCCEEDED, deployment.error
    assert marker.exists()
    taken = Backup.objects.order_by("-started_at").first()
    assert taken.status == BackupStatus.SUCCEEDED and taken.verification == VerificationResult.PASSED
    verification = Verification.objects.get(backup=taken)
    lines = step_run(deployment, "migrate").output.splitlines()
    assert lines[0] == f"taking a backup of {target.name}"
    assert lines[1] == f"backup #{taken.pk} of {target.name}: {taken.size_bytes} bytes, sha256 {taken.sha256}"
    assert lines[2].startswith(f"verification #{verification.pk} of backup #{taken.pk} passed (checksum, restore,")
    assert lines[3].startswith(f"backup gate passed: backup #{taken.pk} of {target.name}")
    assert taken.requested_by == f"deployment #{deployment.pk}"


@pytest.mark.service("postgres")
def test_take_backup_on_a_postgresql_target(environment, settings, tmp_path, pg_source):
    marker = tmp_path / "migrated"
    target = pg_source.target
    deployment = deploy_with(environment, [migration(marker, backup_target=target.name, take_backup=True)])
    assert deployment.status == DeploymentStatus.SUCCEEDED, deployment.error
    assert Backup.objects.verified().filter(target=target).count() == 1
    assert pg_source.server.scratch_left() == []


def test_a_marked_command_step_is_gated_and_a_migrate_step_may_opt_out(environment, target, tmp_path):
    marker = tmp_path / "ran"
    gated = cmd("warm caches", f"open({str(marker)!r}, 'w')", requires_verified_backup=True, backup_target=target.name)
    deployment = deploy_with(environment, [gated])
    assert deployment.status == DeploymentStatus.FAILED
    assert "has no verified backup" in step_run(deployment, "warm caches").error
    assert not marker.exists()

    ungated = migration(tmp_path / "migrated", requires_verified_backup=False)
    deployment = deploy_with(environment, [ungated])
    assert deployment.status == DeploymentStatus.SUCCEEDED
    assert (tmp_path / "migrated").exists()


def test_a_rollback_migration_is_never_gated(environment, target, tmp_path):
    """Undoing must stay possible: the revert runs though the target has no backup at all."""
    undone = tmp_path / "reverted"
    revert = {"name": "revert", "kind": "migrate", "argv": ["{python}", "-c", f"open({str(undone)!r}, 'w')"]}
    steps = [
        echo("prepare", "ready", rollback=revert),
        cmd("break", "raise SystemExit(2)"),
    ]
    deployment = deploy_with(environment, steps)
    assert deployment.status == DeploymentStatus.ROLLED_BACK
    assert step_run(deployment, "revert", Phase.ROLLBACK).status == StepStatus.SUCCEEDED
    assert undone.exists()


def test_a_dry_run_says_what_the_gate_would_decide(environment, target, tmp_path):
    fresh = verified_backup(target)
    environment(
        [
            migration(tmp_path / "m1", backup_target=target.name),
            {**migration(tmp_path / "m2", backup_target=target.name, take_backup=True), "name": "second"},
        ]
    )
    deployment = deployment_request(environment="test", version="v1", actor=SYSTEM, dry_run=True)
    run(deployment.pk)
    first, second = StepRun.objects.filter(deployment=deployment).order_by("index")
    assert first.output.startswith(
        f"would check that {target.name} has a verified backup younger than its RPO "
        f"(now: passes with backup #{fresh.pk}), then run "
    )
    assert second.output.startswith(f"would take and verify a backup of {target.name}, then run ")
    assert not (tmp_path / "m1").exists() and Backup.objects.count() == 1


BAD_FIELDS = [
    ({"requires_verified_backup": "yes"}, "steps[0].requires_verified_backup", "true or false"),
    ({"take_backup": 1}, "steps[0].take_backup", "true or false"),
    ({"backup_target": ""}, "steps[0].backup_target", "the name of a backup target"),
    ({"backup_target": "two words"}, "steps[0].backup_target", "the name of a backup target"),
    ({"backup_target": ["default"]}, "steps[0].backup_target", "the name of a backup target"),
    ({"requires_verified_backup": False, "take_backup": True}, "steps[0].take_backup", "the step is not gated"),
]


@pytest.mark.parametrize(
    ("extra", "field", "message"),
    BAD_FIELDS,
    ids=["requires-not-bool", "take-not-bool", "target-empty", "target-spaces", "target-list", "take-ungated"],
)
def test_bad_gate_fields_are_refused_when_the_pipeline_is_saved(extra, field, message, tmp_path):
    with pytest.raises(InvalidDeployment) as raised:
        pipeline_save(name="gated", steps=[migration(tmp_path / "m", **extra)], actor=SYSTEM)
    assert raised.value.field == field and message in raised.value.message
    assert not Pipeline.objects.filter(name="gated").exists()


@pytest.mark.parametrize(
    ("step", "field", "message"),
    [
        (cmd("plain", "pass", take_backup=True), "steps[0].take_backup", "the step is not gated"),
        (
            echo("prepare", "x", rollback={**cmd("undo", "pass"), "requires_verified_backup": True}),
            "steps[0].rollback.requires_verified_backup",
            "a rollback action is never gated",
        ),
        (
            echo("prepare", "x", rollback={"name": "undo", "kind": "migrate", "backup_target": "default"}),
            "steps[0].rollback.backup_target",
            "a rollback action is never gated",
        ),
        ({"name": "backup", "kind": "backup", "verify": "yes"}, "steps[0].verify", "true or false"),
        ({**cmd("plain", "pass"), "take_backups": True}, "steps[0].take_backups", "did you mean take_backup?"),
    ],
    ids=["take-on-command", "rollback-marked", "rollback-target", "backup-verify-not-bool", "misspelt"],
)
def test_gate_fields_where_they_mean_nothing_are_refused(step, field, message):
    with pytest.raises(InvalidDeployment) as raised:
        pipeline_save(name="gated", steps=[step], actor=SYSTEM)
    assert raised.value.field == field and message in raised.value.message
    assert not Pipeline.objects.filter(name="gated").exists()


def test_a_verifying_backup_step_lets_the_next_migration_through(environment, target, tmp_path):
    """The shipped pipelines' shape: a backup step with verify: true, then the gated migration."""
    marker = tmp_path / "migrated"
    steps = [
        {"name": "backup", "kind": "backup", "target": target.name, "verify": True},
        migration(marker, backup_target=target.name),
    ]
    deployment = deploy_with(environment, steps)
    assert deployment.status == DeploymentStatus.SUCCEEDED, deployment.error
    backup = Backup.objects.get()
    assert backup.verification == VerificationResult.PASSED
    assert f"verification #{Verification.objects.get().pk} of backup #{backup.pk} passed" in (
        step_run(deployment, "backup").output
    )
    assert step_run(deployment, "migrate").output.startswith(f"backup gate passed: backup #{backup.pk} ")


def test_the_shipped_pipelines_verify_their_backup_and_earlier_ones_are_brought_up_to_date():
    from deployments.defaults import (
        DEMO,
        DEMO_STEPS,
        PRODUCT_PIPELINE,
        PRODUCT_STEPS,
        _before_backup_gate,
        _without_demo_product_env,
        ensure_defaults,
    )

    for steps in (DEMO_STEPS, PRODUCT_STEPS):
        backup, migrate = (step for step in steps if step["kind"] in ("backup", "migrate"))
        assert backup["verify"] is True and steps.index(backup) < steps.index(migrate)
    ensure_defaults()
    earlier_demo = _before_backup_gate(_without_demo_product_env(DEMO_STEPS))
    Pipeline.objects.filter(name=DEMO).update(steps=earlier_demo)
    Pipeline.objects.filter(name=PRODUCT_PIPELINE).update(steps=_before_backup_gate(PRODUCT_STEPS))
    ensure_defaults()
    assert Pipeline.objects.get(name=DEMO).steps == DEMO_STEPS
    assert Pipeline.objects.get(name=PRODUCT_PIPELINE).steps == PRODUCT_STEPS

    # One an operator changed (here: took the verification off again) is left as it is.
    changed = [{**step, "verify": False} if step["kind"] == "backup" else step for step in DEMO_STEPS]
    Pipeline.objects.filter(name=DEMO).update(steps=changed)
    ensure_defaults()
    assert Pipeline.objects.get(name=DEMO).steps == changed


def test_a_refused_migration_does_not_run_its_own_rollback_but_earlier_steps_roll_back(environment, target, tmp_path):
    verified_backup(target, hours_ago=30)  # stale: refused
    undone, earlier = tmp_path / "downgraded", tmp_path / "earlier-undone"
    downgrade = {"name": "downgrade", "kind": "command", "argv": ["{python}", "-c", f"open({str(undone)!r}, 'w')"]}
    first = {**echo("before", "first"), "rollback": {"name": "undo", "kind": "command",
             "argv": ["{python}", "-c", f"open({str(earlier)!r}, 'w')"]}}  # fmt: skip
    deployment = deploy_with(
        environment, [first, migration(tmp_path / "migrated", backup_target=target.name, rollback=downgrade)]
    )

    assert deployment.status == DeploymentStatus.ROLLED_BACK
    assert step_run(deployment, "migrate").error.startswith("backup gate:")
    assert not undone.exists()  # the migration never ran: nothing of it to undo
    assert earlier.exists()  # the steps that did run are rolled back as for any failure


def test_the_reaper_does_not_run_the_own_rollback_of_a_migration_the_gate_refused(
    environment, target, tmp_path, request
):
    """The worker dies rolling back after the gate refused a migration; the reaper's rollback (a runner
    of its own, in a new task) still knows the migration never started."""
    import threading
    import time

    from deployments.services import reap

    verified_backup(target, hours_ago=30)  # stale: refused
    undone, waiting, earlier = tmp_path / "downgraded", tmp_path / "undo-waiting", tmp_path / "earlier-undone"
    downgrade = {"name": "downgrade", "kind": "command", "argv": ["{python}", "-c", f"open({str(undone)!r}, 'w')"]}
    # The first run of the earlier step's undo hangs (its worker dies there); the reaper's run completes it.
    undo_code = (
        "import os, time\n"
        f"if os.path.exists({str(waiting)!r}): open({str(earlier)!r}, 'w')\n"
        f"else: open({str(waiting)!r}, 'w').close(); time.sleep(120)"
    )
    first = {**echo("before", "first"), "rollback": {"name": "undo", "kind": "command",
             "argv": ["{python}", "-c", undo_code]}}  # fmt: skip
    environment([first, migration(tmp_path / "migrated", backup_target=target.name, rollback=downgrade)])
    deployment = deployment_request(environment="test", version="v1", actor=SYSTEM)
    lost_worker = threading.Thread(target=run, args=(deployment.pk,), daemon=True)
    lost_worker.start()
    deadline = timezone.now() + timedelta(seconds=30)
    while not (waiting.exists() and StepRun.objects.filter(deployment=deployment, name="undo").exclude(pid=None)):
        assert timezone.now() < deadline, "the rollback never reached the earlier step's undo"
        time.sleep(0.05)
    assert step_run(deployment, "migrate").not_started

    request.getfixturevalue("eager_tasks")
    # As if the worker stopped heartbeating an hour ago: the reaper takes over and rolls back again.
    assert reap(now=timezone.now() + timedelta(hours=1))["continued"] == [deployment.pk]
    lost_worker.join(30)

    deployment.refresh_from_db()
    assert deployment.status == DeploymentStatus.ROLLED_BACK
    assert earlier.exists()  # the reaper's rollback undid the step that ran
    assert not undone.exists()  # and not the migration that never started
    assert not StepRun.objects.filter(deployment=deployment, phase=Phase.ROLLBACK, name="downgrade").exists()
