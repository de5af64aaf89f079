"""Beat's minute pass over the job monitors, and the monitors' admin screen."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from controlplane.models import AuditEvent
from monitoring.job_monitors import job_monitors_sweep
from monitoring.models import JobMonitor, JobState, ScheduleKind
from monitoring.tasks import sweep_job_monitors

pytestmark = pytest.mark.django_db


def _monitor(**fields: object) -> JobMonitor:
    return JobMonitor.objects.create(name=f"job-{uuid.uuid4().hex[:8]}", **fields)


def test_sweep_moves_up_to_late_to_down_and_a_ping_brings_it_back(client: Client) -> None:
    monitor = _monitor(period_seconds=3600, grace_seconds=600)
    client.get(monitor.ping_path())
    monitor.refresh_from_db()
    pinged = monitor.last_ping
    assert pinged is not None and monitor.state == JobState.UP

    assert job_monitors_sweep(now=pinged + timedelta(minutes=59)) == 0
    assert JobMonitor.objects.get(pk=monitor.pk).state == JobState.UP
    assert job_monitors_sweep(now=pinged + timedelta(minutes=61)) == 1
    assert JobMonitor.objects.get(pk=monitor.pk).state == JobState.LATE
    assert job_monitors_sweep(now=pinged + timedelta(minutes=71)) == 1
    down = JobMonitor.objects.get(pk=monitor.pk)
    assert down.state == JobState.DOWN and down.state_changed == pinged + timedelta(minutes=71)
    assert job_monitors_sweep(now=pinged + timedelta(days=2)) == 0  # down stays down

    client.get(monitor.ping_path())
    assert JobMonitor.objects.get(pk=monitor.pk).state == JobState.UP


def test_sweep_leaves_new_and_paused_monitors_and_follows_cron(client: Client) -> None:
    new = _monitor(period_seconds=60, grace_seconds=60)
    paused = _monitor(period_seconds=60, grace_seconds=60, state=JobState.PAUSED, last_ping=timezone.now())
    nightly = _monitor(schedule_kind=ScheduleKind.CRON, cron="0 3 * * *", tz="Europe/Paris", grace_seconds=3600)
    client.get(nightly.ping_path())
    later = timezone.now() + timedelta(days=3)
    assert job_monitors_sweep(now=later) == 1
    assert JobMonitor.objects.get(pk=new.pk).state == JobState.NEW
    assert JobMonitor.objects.get(pk=paused.pk).state == JobState.PAUSED
    assert JobMonitor.objects.get(pk=nightly.pk).state == JobState.DOWN


def test_the_beat_task_sweeps_with_the_real_clock() -> None:
    overdue = _monitor(period_seconds=60, grace_seconds=60, state=JobState.UP,
                       last_ping=timezone.now() - timedelta(minutes=5))  # fmt: skip
    fresh = _monitor(period_seconds=3600, grace_seconds=60, state=JobState.UP, last_ping=timezone.now())
    assert sweep_job_monitors() == 1
    assert JobMonitor.objects.get(pk=overdue.pk).state == JobState.DOWN
    assert JobMonitor.objects.get(pk=fresh.pk).state == JobState.UP


def test_the_sweep_is_scheduled_every_minute(settings) -> None:
    entry = settings.CELERY_BEAT_SCHEDULE["job-monitors"]
    assert entry["task"] == "monitoring.tasks.sweep_job_monitors" and entry["schedule"] == 60.0


def test_operator_creates_a_monitor_sees_its_ping_url_and_it_is_audited(operator_client: Client) -> None:
    response = operator_client.post(
        "/admin/monitoring/jobmonitor/add/",
        {"name": "weekly-digest", "schedule_kind": "cron", "period_seconds": "86400", "cron": "0 8 * * 1",
         "tz": "Europe/Berlin", "grace_seconds": "1800"},
        follow=True,
    )  # fmt: skip
    monitor = JobMonitor.objects.get(name="weekly-digest")
    page = response.content.decode()
    assert f"http://testserver/ping/{monitor.ping_key}" in page
    event = AuditEvent.objects.get(action="jobmonitor.create")
    assert event.after["cron"] == "0 8 * * 1" and str(monitor.ping_key) not in str(event.after)
    assert "last_output" not in event.after


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"cron": "0 25 * * *", "tz": "UTC"}, "cron expression"),
        ({"cron": "0 8 * *", "tz": "UTC"}, "five fields"),
        ({"cron": "0 8 * * *", "tz": "Europe/Atlantis"}, "unknown time zone"),
    ],
)
def test_bad_schedules_are_refused_in_admin(operator_client: Client, fields: dict[str, str], error: str) -> None:
    response = operator_client.post(
        "/admin/monitoring/jobmonitor/add/",
        {"name": "bad", "schedule_kind": "cron", "period_seconds": "86400", "grace_seconds": "1800", **fields},
    )
    assert response.status_code == 200 and error in response.content.decode()
    assert not JobMonitor.objects.exists()


def test_pause_and_resume_are_audited_actions(operator_client: Client) -> None:
    monitor = _monitor(state=JobState.UP, last_ping=timezone.now())
    url = "/admin/monitoring/jobmonitor/"
    operator_client.post(url, {"action": "pause", "_selected_action": [monitor.pk]})
    assert JobMonitor.objects.get(pk=monitor.pk).state == JobState.PAUSED
    assert AuditEvent.objects.get(action="jobmonitor.pause").after == {"state": "paused"}
    operator_client.post(url, {"action": "resume", "_selected_action": [monitor.pk]})
    assert JobMonitor.objects.get(pk=monitor.pk).state == JobState.NEW
    assert AuditEvent.objects.filter(action="jobmonitor.resume").count() == 1


def test_viewer_cannot_change_monitors(viewer_client: Client) -> None:
    response = viewer_client.post(
        "/admin/monitoring/jobmonitor/add/",
        {"name": "sneaky", "schedule_kind": "period", "period_seconds": "3600", "tz": "UTC", "grace_seconds": "600"},
    )
    assert response.status_code in (302, 403) and not JobMonitor.objects.exists()
