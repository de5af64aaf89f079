"""Restore drills: a recovery plan rehearsed on a scratch database, on its schedule, with the RTO achieved."""

from __future__ import annotations

import secrets
import stat
from datetime import timedelta

import psycopg
import pytest
from django.urls import reverse
from django.utils import timezone
from psycopg import sql

from backups.drills import drill_create, drill_due, next_drill_due, reap_stale_drills
from backups.models import Drill, DrillStatus
from backups.readiness import restore_drills
from backups.selectors import drill_failures
from backups.services import backup_create, backup_verify
from controlplane.audit import Actor
from controlplane.drills import DrillPlan
from controlplane.models import AuditEvent
from controlplane.readiness import FAIL, PASS, WARN
from tests.backups.conftest import pg_admin, pg_url

pytestmark = [pytest.mark.django_db]
SYSTEM = Actor.system("tests")


def make_plan(target, *, smoke_queries=(), interval_hours=168, name=None):
    from deployments.models import Environment, Pipeline, RecoveryPlan

    label = secrets.token_hex(3)
    pipeline = Pipeline.objects.create(name=f"drill-{label}", steps=[])
    environment = Environment.objects.create(name=f"drill-{label}", pipeline=pipeline)
    plan = RecoveryPlan(
        failure_type=name or f"db_failure_{label}",
        environment=environment,
        steps=[{"name": "health", "kind": "health_gate", "checks": "ready", "interval": 1, "timeout": 5}],
        drill_target=target,
        drill_interval_hours=interval_hours,
        smoke_queries=list(smoke_queries),
    )
    plan.full_clean()
    plan.save()
    return plan


def verified_backup(target):
    backup = backup_create(target=target, actor=SYSTEM)
    assert backup_verify(backup=backup, actor=SYSTEM).status == "passed"
    backup.refresh_from_db()
    return backup


def source_state(pg_source):
    """Everything a drill could change in the source: its rows and its statistics of writes."""
    rows = pg_source.rows()
    [(inserted, updated, deleted)] = pg_source.query(
        "SELECT sum(n_tup_ins), sum(n_tup_upd), sum(n_tup_del) FROM pg_stat_user_tables"
    )
    return rows, (inserted, updated, deleted)


@pytest.mark.service("postgres")
def test_a_drill_restores_the_latest_verified_backup_into_a_scratch_runs_the_smoke_queries_there_and_measures_the_rto(
    pg_source, django_capture_on_commit_callbacks
):
    older = verified_backup(pg_source.target)
    backup = verified_backup(pg_source.target)
    backup_create(target=pg_source.target, actor=SYSTEM)  # newer but never verified: not the one restored
    plan = make_plan(
        pg_source.target,
        smoke_queries=[
            "SELECT current_database(), count(*) FROM customers HAVING count(*) = 300",
            "SELECT id FROM billing.invoices WHERE paid LIMIT 1;",
        ],
    )
    before = source_state(pg_source)

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        drill = drill_create(plan_name=plan.failure_type, actor=SYSTEM)

    assert drill.status == DrillStatus.PASSED, drill.error
    assert drill.backup_id == backup.pk != older.pk
    assert drill.rto_ms is not None and drill.rto_ms > 0
    assert [check["name"] for check in drill.checks] == ["checksum", "restore", "smoke_1", "smoke_2"]
    restore_ms = next(check["ms"] for check in drill.checks if check["name"] == "restore")
    assert drill.rto_ms >= restore_ms  # the time to a working database includes the restore and the queries
    # The smoke query ran on the scratch database, never on the source, which is untouched.
    smoke = drill.checks[2]["detail"]
    assert "verify_drill_" in smoke and pg_source.name not in smoke
    assert drill.scratch.startswith("verify_drill_") and drill.scratch_dropped
    assert pg_source.server.scratch_left() == []
    assert source_state(pg_source) == before
    assert not callbacks, "a passed drill alerts nobody"
    assert AuditEvent.objects.filter(action="backup.drill", object_id=str(drill.pk)).exists()
    assert drill_failures()[plan.failure_type] == ""


@pytest.mark.service("postgres")
def test_a_smoke_query_that_writes_fails_the_drill_and_the_source_keeps_its_rows(pg_source):
    verified_backup(pg_source.target)
    plan = make_plan(pg_source.target, smoke_queries=["DELETE FROM customers RETURNING id"])
    before = source_state(pg_source)

    drill = drill_create(plan_name=plan.failure_type, actor=SYSTEM)

    assert drill.status == DrillStatus.FAILED
    assert drill.error.startswith("smoke_1: ") and "read-only transaction" in drill.error
    assert drill.rto_ms is None and drill.scratch_dropped
    assert pg_source.server.scratch_left() == []
    assert source_state(pg_source) == before


def test_a_smoke_query_that_returns_no_row_fails_the_drill_and_readiness_and_alerting_see_it(sqlite_source):
    verified_backup(sqlite_source.target)
    plan = make_plan(sqlite_source.target, smoke_queries=["SELECT id FROM customers WHERE id < 0"])

    drill = drill_create(plan_name=plan.failure_type, actor=SYSTEM)

    assert drill.status == DrillStatus.FAILED
    assert "returned no row" in drill.error
    assert drill.scratch_dropped and not list(sqlite_source.path.parent.glob("verify_*"))
    assert AuditEvent.objects.filter(action="backup.drill_failed", object_id=str(drill.pk)).exists()
    assert drill_failures()[plan.failure_type].startswith(f"drill #{drill.pk} of {plan.failure_type}")
    item = restore_drills()
    assert item.status == FAIL and plan.failure_type in item.message and "returned no row" in item.message
    # The plan no longer drilled: what it raised resolves.
    plan.drill_target = None
    plan.save()
    assert drill_failures()[plan.failure_type] == ""


def test_a_plan_whose_target_has_no_verified_backup_fails_its_drill_saying_so(sqlite_source):
    plan = make_plan(sqlite_source.target, smoke_queries=["SELECT 1"])
    drill = drill_create(plan_name=plan.failure_type, actor=SYSTEM)
    assert drill.status == DrillStatus.FAILED and drill.backup is None
    assert "has no verified backup to restore" in drill.error


@pytest.mark.parametrize(
    ("queries", "problem"),
    [
        ("SELECT 1", "a JSON list of SQL statements"),
        (["SELECT 1; DROP TABLE customers"], "query 1: one statement only"),
        (["SELECT 1", "  "], "query 2: a non-empty SQL string"),
    ],
    ids=["not-a-list", "two-statements", "empty"],
)
def test_a_plan_with_bad_smoke_queries_is_refused_and_not_saved(sqlite_source, queries, problem):
    from django.core.exceptions import ValidationError

    from deployments.models import RecoveryPlan

    plan = make_plan(sqlite_source.target, name="bad_plan")
    plan.smoke_queries = queries
    with pytest.raises(ValidationError) as refused:
        plan.full_clean()
    assert problem in str(refused.value.message_dict["smoke_queries"])
    assert RecoveryPlan.objects.get(failure_type="bad_plan").smoke_queries == []


# --- The schedule, on a controlled clock ---------------------------------------------------------

NOW = timezone.now().replace(microsecond=0)
WEEKLY = DrillPlan("database_failure", "production", "crm", 168, ("SELECT 1",))


def drill_at(hours_ago: float, status: str) -> Drill:
    return Drill(plan=WEEKLY.name, status=status, started_at=NOW - timedelta(hours=hours_ago))


@pytest.mark.parametrize(
    ("plan", "latest", "due"),
    [
        (WEEKLY, None, True),
        (WEEKLY, drill_at(167, DrillStatus.PASSED), False),
        (WEEKLY, drill_at(168, DrillStatus.PASSED), True),
        (WEEKLY, drill_at(0.5, DrillStatus.FAILED), False),
        (WEEKLY, drill_at(1, DrillStatus.FAILED), True),
        (WEEKLY, drill_at(500, DrillStatus.RUNNING), False),
        (DrillPlan("x", "production", "crm", 0), None, False),
        (DrillPlan("x", "production", "", 168), None, False),
    ],
    ids=[
        "never-drilled",
        "passed-6-days-23-hours-ago",
        "passed-a-week-ago",
        "failed-half-an-hour-ago",
        "failed-an-hour-ago",
        "running",
        "no-schedule",
        "no-target",
    ],
)
def test_a_plan_is_due_by_its_schedule(plan, latest, due):
    assert drill_due(plan, latest, now=NOW) is due


def test_the_next_drill_is_a_schedule_after_the_latest(sqlite_source):
    latest = drill_at(24, DrillStatus.PASSED)
    assert next_drill_due(WEEKLY, latest) == latest.started_at + timedelta(hours=168)


def test_the_beat_task_drills_what_is_due_and_nothing_else(sqlite_source, django_capture_on_commit_callbacks):
    from backups.tasks import run_due_drills
    from controlplane.celery import app

    verified_backup(sqlite_source.target)
    due = make_plan(sqlite_source.target, smoke_queries=["SELECT count(*) FROM orders"])
    fresh = make_plan(sqlite_source.target, smoke_queries=["SELECT 1"])
    Drill.objects.create(
        plan=fresh.failure_type, target=sqlite_source.target, status=DrillStatus.PASSED, rto_ms=5, interval_hours=168
    )
    before = app.conf.task_always_eager
    app.conf.task_always_eager = True
    try:
        with django_capture_on_commit_callbacks(execute=True):
            summary = run_due_drills()
    finally:
        app.conf.task_always_eager = before
    assert due.failure_type in summary["drills"] and fresh.failure_type not in summary["drills"]
    drilled = Drill.objects.get(plan=due.failure_type)
    assert drilled.status == DrillStatus.PASSED and drilled.requested_by == "schedule"
    assert Drill.objects.filter(plan=fresh.failure_type).count() == 1


# --- Readiness and the API -----------------------------------------------------------------------


def test_readiness_and_the_recovery_readiness_api_show_the_drills(sqlite_source, api_client):
    verified_backup(sqlite_source.target)
    plan = make_plan(sqlite_source.target, smoke_queries=["SELECT count(*) FROM customers"])
    assert restore_drills().status == WARN  # drilled on a schedule, never drilled yet

    drill = drill_create(plan_name=plan.failure_type, actor=SYSTEM)
    item = restore_drills()
    assert item.status == PASS and plan.failure_type in item.message

    body = api_client("backups").get(reverse("api-backup-readiness")).json()
    [shown] = [d for d in body["drills"] if d["plan"] == plan.failure_type]
    assert shown["ready"] is True and shown["target"] == sqlite_source.target.name
    assert shown["lastPassed"]["id"] == drill.pk and shown["rtoAchievedSeconds"] == drill.rto_ms / 1000
    assert [d["id"] for d in shown["history"]] == [drill.pk]

    # A week and more later, no drill passed within the schedule: readiness warns, the API says not ready.
    Drill.objects.filter(pk=drill.pk).update(started_at=timezone.now() - timedelta(hours=170))
    item = restore_drills()
    assert item.status == WARN and "older than its 168 h schedule" in item.message
    body = api_client("backups").get(reverse("api-backup-readiness")).json()
    [shown] = [d for d in body["drills"] if d["plan"] == plan.failure_type]
    assert shown["ready"] is False and shown["overdue"] is True and body["ready"] is False


def test_the_backups_page_shows_the_drills_and_an_operator_can_drill_now(
    sqlite_source, operator_client, django_capture_on_commit_callbacks
):
    from controlplane.celery import app

    verified_backup(sqlite_source.target)
    plan = make_plan(sqlite_source.target, smoke_queries=["SELECT count(*) FROM customers"])
    drill = drill_create(plan_name=plan.failure_type, actor=SYSTEM)
    page = operator_client.get(reverse("backups:index")).content.decode()
    assert f'id="plan-{plan.failure_type}"' in page and f'id="drill-{drill.pk}"' in page
    assert f"{drill.rto_ms} ms" in page
    plans = operator_client.get(reverse("deployments:index")).content.decode()
    assert f"Restore drill every 168 h on a scratch copy of {sqlite_source.target.name}, 1 smoke query" in plans

    before = app.conf.task_always_eager
    app.conf.task_always_eager = True
    try:
        with django_capture_on_commit_callbacks(execute=True):
            response = operator_client.post(reverse("backups:drill-now", args=[plan.failure_type]))
    finally:
        app.conf.task_always_eager = before
    assert response.status_code == 302
    assert AuditEvent.objects.filter(action="backup.drill_requested", object_id=plan.failure_type).exists()
    assert Drill.objects.filter(plan=plan.failure_type).count() == 2


def test_drilling_an_unknown_plan_is_refused_with_a_clear_message(operator_client):
    response = operator_client.post(reverse("backups:drill-now", args=["no_such_plan"]), follow=True)
    assert "no recovery plan &#x27;no_such_plan&#x27;" in response.content.decode()
    assert not Drill.objects.exists()


# --- Faults --------------------------------------------------------------------------------------


@pytest.mark.service("postgres")
def test_a_hung_restore_times_out_and_its_scratch_is_dropped(pg_source, settings, tmp_path):
    verified_backup(pg_source.target)
    plan = make_plan(pg_source.target, smoke_queries=["SELECT 1"])
    # A pg_restore that never ends: the drill's deadline stops it.
    tools = tmp_path / "bin"
    tools.mkdir()
    hung = tools / "pg_restore"
    hung.write_text("#!/bin/sh\nexec sleep 600\n")
    hung.chmod(hung.stat().st_mode | stat.S_IXUSR)
    settings.PG_BIN_DIR = str(tools)
    settings.BACKUP_TIMEOUT_SECONDS = 2

    drill = drill_create(plan_name=plan.failure_type, actor=SYSTEM)

    assert drill.status == DrillStatus.FAILED
    assert "pg_restore did not finish within 2 s and was stopped" in drill.error
    assert drill.scratch and drill.scratch_dropped
    assert pg_source.server.scratch_left() == []


@pytest.mark.service("postgres")
def test_a_smoke_query_that_hangs_is_stopped_within_the_drills_timeout(pg_source, settings):
    verified_backup(pg_source.target)
    plan = make_plan(pg_source.target, smoke_queries=["SELECT 1", "SELECT pg_sleep(600)"])
    settings.BACKUP_TIMEOUT_SECONDS = 5

    drill = drill_create(plan_name=plan.failure_type, actor=SYSTEM)

    assert drill.status == DrillStatus.FAILED
    # Stopped by the statement timeout set to what was left of the 5 s (or, on a slow machine, with
    # nothing left before it started).
    assert drill.error.startswith("smoke_2: ")
    assert "statement timeout" in drill.error or "did not finish within 5 s" in drill.error
    assert drill.scratch_dropped and pg_source.server.scratch_left() == []


@pytest.mark.service("postgres")
def test_a_dead_workers_drill_is_reaped_and_its_scratch_dropped(pg_source, settings):
    backup = verified_backup(pg_source.target)
    plan = make_plan(pg_source.target, smoke_queries=["SELECT 1"])
    scratch = f"verify_drill_{pg_source.server.label}_dead"
    with pg_admin() as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(scratch)))
    long_ago = timezone.now() - timedelta(seconds=settings.BACKUP_HEARTBEAT_TIMEOUT_SECONDS + 60)
    drill = Drill.objects.create(
        plan=plan.failure_type,
        target=pg_source.target,
        backup=backup,
        started_at=long_ago,
        heartbeat_at=long_ago,
        scratch=scratch,
    )

    assert reap_stale_drills() == 1

    drill.refresh_from_db()
    assert drill.status == DrillStatus.FAILED and "worker stopped" in drill.error
    assert drill.scratch_dropped and pg_source.server.scratch_left() == []
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(pg_url(scratch)).close()


def test_a_running_drill_with_a_live_worker_is_left_alone(sqlite_source):
    plan = make_plan(sqlite_source.target)
    drill = Drill.objects.create(plan=plan.failure_type, target=sqlite_source.target, heartbeat_at=timezone.now())
    assert reap_stale_drills() == 0
    drill.refresh_from_db()
    assert drill.status == DrillStatus.RUNNING
