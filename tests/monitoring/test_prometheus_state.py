"""/metrics: every family described from the first scrape on, and the control plane's state as gauges."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import DatabaseError
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from alerting.models import Alert, AlertRule, AlertState
from backups.models import Backup, BackupStatus, BackupTarget, VerificationResult
from controlplane.audit import Actor
from controlplane.state_metrics import _REGISTRY, collect_state, register_state_metrics
from deployments.models import Deployment, Environment, Pipeline
from flags.services import flag_create
from monitoring.models import HealthMetric, Heartbeat, JobMonitor

pytestmark = pytest.mark.django_db

REQUEST_FAMILIES = {"controlplane_http_requests": "counter", "controlplane_http_request_duration_seconds": "histogram"}


def scrape(client) -> dict:
    response = client.get("/metrics")
    assert response.status_code == 200, response.content
    text = response.content.decode()
    return {family.name: family for family in text_string_to_metric_families(text)} | {"": text}


def values(family) -> dict[tuple, float]:
    """{(label values, sorted by label name): value} of a gauge family."""
    return {tuple(v for _, v in sorted(s.labels.items())): s.value for s in family.samples}


@pytest.fixture
def reader(api_client):
    return api_client("monitoring:read")


def test_first_scrape_describes_every_family_before_any_flush(reader, monkeypatch, tmp_path):
    empty = tmp_path / "prometheus"
    empty.mkdir()
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(empty))  # no process has flushed: no file at all
    families = scrape(reader)
    text = families.pop("")
    for name, kind in REQUEST_FAMILIES.items():
        assert families[name].type == kind
        assert families[name].samples == []
        exposed = name + "_total" if kind == "counter" else name
        assert f"# TYPE {exposed} {kind}" in text and f"# HELP {exposed} " in text
    assert "# HELP controlplane_http_requests_total HTTP requests answered" in text
    for name in (
        "controlplane_check_status",
        "controlplane_heartbeat_age_seconds",
        "controlplane_job_monitor_state",
        "controlplane_flag_enabled",
        "controlplane_flag_rollout_percent",
        "controlplane_backup_last_success_age_seconds",
        "controlplane_backup_last_verified_age_seconds",
        "controlplane_alerts",
        "controlplane_deployments",
        "controlplane_deployment_active",
        "controlplane_guarded_rollouts_active",
    ):
        assert families[name].type == "gauge" and families[name].documentation, name
        assert f"# HELP {name} " in text and f"# TYPE {name} gauge" in text
    up = values(families["controlplane_state_collector_up"])
    assert {("alerting",), ("backups",), ("deployments",), ("flags",), ("monitoring",)} <= set(up)
    assert set(up.values()) == {1.0}


def test_flushed_requests_keep_their_own_help(reader):
    from monitoring.request_metrics import flush

    reader.get("/api/deployment/features/u1")
    flush()
    family = scrape(reader)["controlplane_http_requests"]
    assert family.documentation == "HTTP requests answered"
    assert any(s.labels.get("view") == "api-features-for-user" for s in family.samples)


def test_each_app_state_as_gauges(reader):
    now = timezone.now()
    actor = Actor.system("tests")
    flag_create(data={"name": "gauge-half", "enabled": True, "rollout_percent": 40}, actor=actor)
    flag_create(data={"name": "gauge-off"}, actor=actor)

    target = BackupTarget.objects.create(name="gauge-db", url_env="GAUGE_URL", interval_hours=24)
    Backup.objects.create(
        target=target,
        status=BackupStatus.SUCCEEDED,
        engine="sqlite",
        started_at=now - timedelta(hours=3),
        verification=VerificationResult.PASSED,
    )
    Backup.objects.create(
        target=target, status=BackupStatus.SUCCEEDED, engine="sqlite", started_at=now - timedelta(hours=1)
    )
    Backup.objects.create(target=target, status=BackupStatus.FAILED, engine="sqlite", started_at=now)
    BackupTarget.objects.create(name="gauge-off", url_env="GAUGE_URL", enabled=False)

    rule = AlertRule.objects.create(name="gauge-rule", kind="error_rate", threshold=1, severity="critical")
    Alert.objects.create(rule=rule, dedup_key="gauge-a", state=AlertState.FIRING)
    Alert.objects.create(rule=rule, dedup_key="gauge-b", state=AlertState.FIRING)
    Alert.objects.create(rule=rule, dedup_key="gauge-c", state=AlertState.RESOLVED)

    pipeline = Pipeline.objects.create(name="gauge-p", steps=[])
    staging = Environment.objects.create(name="gauge-staging", pipeline=pipeline)
    quiet = Environment.objects.create(name="gauge-quiet", pipeline=pipeline)
    for status in ("succeeded", "succeeded", "failed", "running"):
        Deployment.objects.create(environment=staging, version="v1", status=status, requested_by="t")
    Deployment.objects.create(environment=quiet, version="v1", status="succeeded", requested_by="t")

    HealthMetric.objects.create(component="gauge-db", measurement="responseTime", status="warn")
    HealthMetric.objects.create(
        component="gauge-db", measurement="connections", status="pass", time=now - timedelta(minutes=5)
    )
    HealthMetric.objects.create(component="gauge-db", measurement="connections", status="fail")
    Heartbeat.objects.create(name="gauge-beat", last_seen=now - timedelta(seconds=90))
    JobMonitor.objects.create(name="gauge-nightly", state="down")

    families = scrape(reader)

    enabled, rollout = (
        values(families["controlplane_flag_enabled"]),
        values(families["controlplane_flag_rollout_percent"]),
    )
    assert enabled[("gauge-half",)] == 1 and rollout[("gauge-half",)] == 40
    assert enabled[("gauge-off",)] == 0

    success = values(families["controlplane_backup_last_success_age_seconds"])
    verified = values(families["controlplane_backup_last_verified_age_seconds"])
    assert 3600 <= success[("gauge-db",)] < 3700
    assert 3 * 3600 <= verified[("gauge-db",)] < 3 * 3600 + 100
    assert ("gauge-off",) not in success  # disabled targets are not watched

    alerts = values(families["controlplane_alerts"])  # labels sorted: severity, state
    assert alerts[("critical", "firing")] >= 2
    assert ("critical", "resolved") not in alerts

    deployments = values(families["controlplane_deployments"])  # environment, status
    assert deployments[("gauge-staging", "succeeded")] == 2
    assert deployments[("gauge-staging", "failed")] == 1
    assert deployments[("gauge-staging", "cancelled")] == 0
    active = values(families["controlplane_deployment_active"])
    assert active[("gauge-staging",)] == 1 and active[("gauge-quiet",)] == 0

    checks = values(families["controlplane_check_status"])  # check, measurement
    assert checks[("gauge-db", "responseTime")] == 0.5
    assert checks[("gauge-db", "connections")] == 0  # the latest row, not the older pass
    assert 85 <= values(families["controlplane_heartbeat_age_seconds"])[("gauge-beat",)] < 200
    jobs = values(families["controlplane_job_monitor_state"])  # monitor, state
    assert jobs[("gauge-nightly", "down")] == 1 and jobs[("gauge-nightly", "up")] == 0


def test_an_active_guarded_rollout_is_counted_as_one_not_as_a_deployment_under_way(reader):
    pipeline = Pipeline.objects.create(name="gauge-p", steps=[])
    flagged = Environment.objects.create(name="gauge-flagged", pipeline=pipeline)
    both = Environment.objects.create(name="gauge-both", pipeline=pipeline)
    guarded = {"type": "guarded", "version": "flag-x", "requested_by": "t"}
    Deployment.objects.create(environment=flagged, status="running", flag="checkout", **guarded)
    Deployment.objects.create(environment=flagged, status="queued", flag="search", **guarded)
    Deployment.objects.create(environment=flagged, status="rolled_back", flag="chat", **guarded)
    Deployment.objects.create(environment=both, status="running", flag="checkout", **guarded)
    Deployment.objects.create(environment=both, version="v2", status="rolling_back", requested_by="t")

    families = scrape(reader)

    active = values(families["controlplane_deployment_active"])
    assert active[("gauge-flagged",)] == 0  # two plans under way, but no deployment
    assert active[("gauge-both",)] == 1
    rollouts = values(families["controlplane_guarded_rollouts_active"])
    assert rollouts[("gauge-flagged",)] == 2 and rollouts[("gauge-both",)] == 1
    deployments = values(families["controlplane_deployments"])  # all time: plans are in the counts
    assert deployments[("gauge-flagged", "running")] == 1 and deployments[("gauge-flagged", "rolled_back")] == 1


def test_reads_do_not_grow_with_the_rows(django_assert_max_num_queries):
    pipeline = Pipeline.objects.create(name="gauge-p", steps=[])
    for i in range(6):
        environment = Environment.objects.create(name=f"gauge-{i}", pipeline=pipeline)
        Deployment.objects.create(environment=environment, version="v1", status="succeeded", requested_by="t")
        target = BackupTarget.objects.create(name=f"gauge-{i}", url_env="GAUGE_URL")
        Backup.objects.create(target=target, status=BackupStatus.SUCCEEDED, engine="sqlite")
        JobMonitor.objects.create(name=f"gauge-{i}")
    with django_assert_max_num_queries(12):
        assert len(list(collect_state())) > 10


@pytest.fixture
def broken_app():
    def read():
        raise DatabaseError("connection refused")

    register_state_metrics("broken", read)
    yield
    _REGISTRY.pop("broken", None)


def test_an_app_whose_read_raises_is_left_out_and_marked_down(reader, broken_app, caplog):
    families = scrape(reader)
    up = values(families["controlplane_state_collector_up"])
    assert up[("broken",)] == 0
    assert up[("flags",)] == 1 and "controlplane_flag_enabled" in families
    assert "state metrics of broken could not be read" in caplog.text


def test_metrics_still_need_the_scope(client, api_client):
    assert client.get("/metrics").status_code == 401
    assert api_client("flags:read").get("/metrics").status_code == 403


def test_a_database_outage_leaves_every_app_down_and_raises_nothing():
    from django.db import OperationalError, connection

    def refuse(execute, sql, params, many, context):
        raise OperationalError("server closed the connection unexpectedly")

    with connection.execute_wrapper(refuse):
        families = {family.name: family for family in collect_state()}
    up = values(families["controlplane_state_collector_up"])
    assert up and up[("deployments",)] == 0 and up[("backups",)] == 0 and up[("alerting",)] == 0
    assert "controlplane_deployments" not in families
