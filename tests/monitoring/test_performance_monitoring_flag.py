"""performance_monitoring gates the control plane's request rollups: off, requests are not recorded."""

from __future__ import annotations

import pytest

from controlplane.audit import Actor
from controlplane.localcopy import forget_all
from flags.models import Flag
from flags.services import flag_create, flag_update
from monitoring.models import RequestRollup
from monitoring.request_metrics import flush, refresh_gate

pytestmark = pytest.mark.django_db


@pytest.fixture
def performance_monitoring(django_capture_on_commit_callbacks):
    """set(on) -> the flag as the operator would leave it, read afresh by this process's next look."""

    def set_flag(on: bool) -> None:
        with django_capture_on_commit_callbacks(execute=True):
            if Flag.objects.filter(name="performance_monitoring").exists():
                flag_update(name="performance_monitoring", changes={"enabled": on}, actor=Actor.system("tests"))
            else:
                flag_create(
                    data={"name": "performance_monitoring", "enabled": on, "rollout_percent": 100},
                    actor=Actor.system("tests"),
                )
        forget_all()  # the next read loads the rows, as the next look after the version bump would

    return set_flag


def test_flag_off_records_no_request(operator_client, performance_monitoring):
    performance_monitoring(False)
    assert refresh_gate() is False
    operator_client.get("/flags/")
    flush()
    assert not RequestRollup.objects.exists()


def test_flag_on_records_requests_and_turning_it_off_stops_them(operator_client, performance_monitoring):
    performance_monitoring(True)
    assert refresh_gate() is True
    operator_client.get("/flags/")
    flush()
    assert RequestRollup.objects.get(view="flags:list").count == 1

    performance_monitoring(False)
    refresh_gate()
    operator_client.get("/flags/")
    operator_client.get("/flags/")
    flush()
    assert RequestRollup.objects.get(view="flags:list").count == 1

    performance_monitoring(True)
    refresh_gate()
    operator_client.get("/flags/")
    flush()
    assert RequestRollup.objects.get(view="flags:list").count == 2


def test_missing_flag_leaves_recording_on(operator_client):
    assert refresh_gate() is True
    operator_client.get("/flags/")
    flush()
    assert RequestRollup.objects.filter(view="flags:list").exists()
