from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from monitoring.models import Heartbeat
from monitoring.tasks import heartbeat


@pytest.mark.django_db
def test_heartbeat_task_records_the_time_once_per_name():
    before = timezone.now()
    heartbeat()
    first = Heartbeat.objects.get(name="celery")
    assert first.last_seen >= before and first.hostname

    Heartbeat.objects.filter(pk=first.pk).update(last_seen=before - timedelta(minutes=5))
    heartbeat()
    assert Heartbeat.objects.count() == 1
    assert Heartbeat.objects.get(name="celery").last_seen >= before


def test_heartbeat_is_scheduled_every_30_seconds(settings):
    entry = settings.CELERY_BEAT_SCHEDULE["heartbeat"]
    assert entry["task"] == heartbeat.name
    assert entry["schedule"] == 30.0


def test_dashboard_shows_the_last_heartbeat(operator_client):
    assert b"Background jobs: no heartbeat yet" in operator_client.get("/").content
    heartbeat()
    assert b"Background jobs: last heartbeat" in operator_client.get("/").content
