"""Fixtures of the access tests: a row of every model the admin shows, and users of chosen permissions."""

from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace

import pytest
from django.utils import timezone

from tests.deployments.conftest import echo
from tests.factories import UserFactory


@pytest.fixture
def one_of_each(db):
    """A row of every model registered in admin, in the state its admin actions act on (a token not
    revoked, a switch off, a backup that succeeded, a firing alert, an active silence, a queued deployment)."""
    from axes.models import AccessAttempt, AccessFailureLog, AccessLog
    from django.contrib.auth.models import Group
    from waffle.models import Sample, Switch

    from alerting.models import Alert, AlertRule, AlertState, Delivery, NotificationChannel, Silence
    from backups.models import Backup, BackupCopy, BackupStatus, BackupTarget, CopyStatus
    from controlplane.audit import Actor
    from controlplane.models import ApiToken
    from controlplane.models import Environment as ControlEnvironment
    from controlplane.services import api_token_create
    from deployments.models import AnalysisMeasurement, LogLine, RecoveryPlan, StepRun
    from deployments.services import deployment_request, environment_save, pipeline_save
    from flags.models import FlagUsage, SdkInstance, Segment
    from flags.schedules import schedule_change
    from flags.services import flag_create
    from monitoring.models import HealthMetric, JobMonitor, MonitoredEndpoint, Service, ServiceLevelObjective

    actor = Actor.system("tests")
    now = timezone.now()
    access = {"user_agent": "test", "http_accept": "*/*", "path_info": "/accounts/login/", "username": "someone"}
    AccessAttempt.objects.create(**access, get_data="", post_data="", failures_since_start=1)
    AccessLog.objects.create(**access)
    AccessFailureLog.objects.create(**access)
    Switch.objects.create(name="maintenance", active=False)
    Sample.objects.create(name="sampled", percent=50)
    Group.objects.create(name="on-call")
    token, _ = api_token_create(name="ci", scopes=["flags:read"], expires_in_days=None, actor=actor)
    flag = flag_create(data={"name": "chat", "enabled": False, "rollout_percent": 0}, actor=actor)
    Segment.objects.create(name="premium")
    production = ControlEnvironment.objects.ensure("production")
    SdkInstance.objects.create(environment=production, app_name="backend", instance_id="pod-1")
    FlagUsage.objects.create(flag="chat", environment=production, hour=now.replace(minute=0, second=0, microsecond=0))
    schedule_change(name="chat", environment=None, at=now + timedelta(hours=1), kind="enable", actor=actor)
    channel = NotificationChannel.objects.create(name="ops", kind="webhook", url="http://127.0.0.1:9/hook")
    rule = AlertRule.objects.create(name="db failing", kind="check_status", threshold=3, component="database")
    alert = Alert.objects.create(rule=rule, dedup_key="db", component="database", state=AlertState.FIRING)
    Delivery.objects.create(channel=channel, alert=alert, event="firing", status="sent", attempts=1)
    Silence.objects.create(ends_at=now + timedelta(hours=1), reason="upgrade")
    MonitoredEndpoint.objects.create(name="site", url="https://example.test/")
    JobMonitor.objects.create(name="weekly-digest", state="up", last_ping=now)
    HealthMetric.objects.create(component="database", measurement="responseTime", status="pass", value=3)
    slo = ServiceLevelObjective.objects.create(service=Service.objects.create(name="backend"), name="availability")
    target, _ = BackupTarget.objects.get_or_create(name="default", defaults={"url_env": ""})
    backup = Backup.objects.create(target=target, engine="sqlite", status=BackupStatus.SUCCEEDED, finished_at=now)
    BackupCopy.objects.create(backup=backup, storage="offsite", status=CopyStatus.FAILED, error="refused")
    pipeline = pipeline_save(name="test-pipeline", steps=[echo("one", "step one")], actor=actor)
    environment = environment_save(name="test", pipeline=pipeline, health_url="", actor=actor)
    deployment = deployment_request(environment="test", version="v1", actor=actor)
    LogLine.objects.create(deployment=deployment, message="started")
    analysed = StepRun.objects.create(deployment=deployment, index=0, name="verify", kind="analysis", status="running")
    AnalysisMeasurement.objects.create(
        step_run=analysed, condition=0, label="backend error_ratio", value=0.002, threshold=0.01, verdict="pass"
    )
    plan = RecoveryPlan.objects.create(failure_type="database", environment=environment, steps=[echo("fix", "fixed")])
    return SimpleNamespace(
        token=ApiToken.objects.get(pk=token.pk),
        flag=flag,
        alert=alert,
        target=target,
        backup=backup,
        environment=environment,
        deployment=deployment,
        plan=plan,
        slo=slo,
    )


@pytest.fixture
def user_with(db):
    """user_with(*permission codes, is_staff=True) -> a new user holding exactly those permissions."""
    from django.contrib.auth.models import Permission

    made = iter(range(1000))

    def make(*codes: str, is_staff: bool = True):
        wanted = {tuple(code.split(".")) for code in codes}
        held = [
            permission
            for permission in Permission.objects.select_related("content_type")
            if (permission.content_type.app_label, permission.codename) in wanted
        ]
        assert len(held) == len(wanted), f"unknown permission among {sorted(codes)}"
        user = UserFactory(username=f"holder{next(made)}", is_staff=is_staff)
        user.user_permissions.set(held)
        return user

    return make
