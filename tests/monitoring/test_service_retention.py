"""Retention of services' rollups: minutes 8 days, hours 400 days, Prometheus sources' samples 8 days."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from controlplane.retention import prune
from monitoring.models import Service, ServiceHour, ServiceMinute, SignalSample

pytestmark = pytest.mark.django_db


def test_old_rollups_and_samples_go_and_recent_ones_stay(settings) -> None:
    assert (
        settings.SERVICE_MINUTE_RETENTION_DAYS,
        settings.SERVICE_HOUR_RETENTION_DAYS,
        settings.SIGNAL_SAMPLE_RETENTION_DAYS,
    ) == (8, 400, 8)
    service = Service.objects.create(name="backend")
    now = timezone.now().replace(second=0, microsecond=0)
    for age in (timedelta(days=7), timedelta(days=9)):
        ServiceMinute.objects.create(service=service, minute=now - age, requests=1)
        SignalSample.objects.create(service=service, at=now - age, signal="p95", value=0.2)
    for age in (timedelta(days=399), timedelta(days=401)):
        ServiceHour.objects.create(service=service, hour=(now - age).replace(minute=0), requests=1)

    deleted = prune(now=now)
    assert (deleted["service minutes"], deleted["service hours"], deleted["signal samples"]) == (1, 1, 1)
    assert ServiceMinute.objects.get().minute == now - timedelta(days=7)
    assert SignalSample.objects.get().at == now - timedelta(days=7)
    assert ServiceHour.objects.get().hour == (now - timedelta(days=399)).replace(minute=0)
