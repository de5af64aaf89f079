"""A stopped beat is noticed: the heartbeat check's warn and fail stages, each worker's own heartbeat,
one run of the checks per interval whoever asks, and a real worker standing in for a silent beat."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta

import pytest
from django.utils import timezone

from alerting.models import Alert, AlertRule, AlertState
from alerting.services import channel_create, rule_update
from controlplane.audit import Actor
from flags.services import flag_create
from monitoring.checks import FAIL, PASS, WARN, check_beat, check_workers
from monitoring.models import HealthMetric, Heartbeat
from monitoring.services import checks_run_claim, worker_heartbeat_delete, worker_heartbeat_record
from monitoring.watchdog import stand_in
from tests.conftest import BASE_DIR, subprocess_env, test_database_url

SYSTEM = Actor.system("tests")


def beat_heartbeat(seconds_ago: float) -> None:
    Heartbeat.objects.update_or_create(
        name="celery", defaults={"last_seen": timezone.now() - timedelta(seconds=seconds_ago), "hostname": "beat-host"}
    )


@pytest.mark.django_db
def test_beat_heartbeat_is_late_after_two_intervals_and_failing_after_three(settings):
    settings.HEARTBEAT_INTERVAL_SECONDS = 30
    beat_heartbeat(45)
    assert check_beat().status == PASS
    beat_heartbeat(75)
    late = check_beat()
    assert late.status == WARN and late.value == pytest.approx(75, abs=2) and "late (limit 90 s)" in late.output
    beat_heartbeat(95)
    silent = check_beat()
    assert silent.status == FAIL and "limit 90 s" in silent.output


@pytest.mark.django_db
def test_the_workers_check_reads_each_workers_own_heartbeat(settings):
    settings.WORKER_HEARTBEAT_SECONDS = 15
    none = check_workers()
    assert none.status == FAIL and "no Celery worker has recorded a heartbeat" in none.output
    worker_heartbeat_record(nodename="celery@host-a")
    b = worker_heartbeat_record(nodename="celery@" + "b" * 80)  # longer than the name column
    alive = check_workers()
    assert (alive.status, alive.value) == (PASS, 2) and "celery@host-a" in alive.output

    Heartbeat.objects.filter(pk=b.pk).update(last_seen=timezone.now() - timedelta(seconds=60))
    assert check_workers().value == 1
    worker_heartbeat_delete(nodename="celery@host-a")  # stopped on purpose
    gone = check_workers()
    assert gone.status == FAIL and "no worker heartbeat within 45 s" in gone.output and "60 s ago" in gone.output


@pytest.mark.django_db
def test_the_checks_run_once_per_interval_whoever_claims_them():
    assert checks_run_claim(min_gap_seconds=60) is True
    assert checks_run_claim(min_gap_seconds=60) is False  # beat's task, a worker and a web process alike
    assert checks_run_claim(min_gap_seconds=0) is True
    Heartbeat.objects.filter(name="scheduled-checks").update(last_seen=timezone.now() - timedelta(seconds=61))
    assert checks_run_claim(min_gap_seconds=60) is True


@pytest.mark.django_db(transaction=True)
def test_a_web_process_stands_in_for_beat_only_when_no_worker_is_alive(settings):
    settings.HEARTBEAT_INTERVAL_SECONDS, settings.HEALTH_CHECK_INTERVAL_SECONDS = 30, 60
    beat_heartbeat(20)
    assert stand_in(waited_seconds=3600, only_without_workers=True) is False  # beat is alive
    beat_heartbeat(200)
    worker_heartbeat_record(nodename="celery@busy")
    assert stand_in(waited_seconds=3600, only_without_workers=True) is False  # the worker's timer does it
    Heartbeat.objects.filter(name__startswith="worker:").delete()

    assert stand_in(waited_seconds=3600, only_without_workers=True) is True
    beat = HealthMetric.objects.get(component="celery-beat")
    assert beat.status == FAIL
    alert = Alert.objects.get(rule__name="celery beat silent")
    assert alert.state == AlertState.FIRING and alert.component == "celery-beat"
    assert stand_in(waited_seconds=3600) is False  # ran less than an interval ago
    assert HealthMetric.objects.filter(component="celery-beat").count() == 1


@pytest.mark.django_db
def test_no_heartbeat_at_all_waits_for_a_fresh_installs_beat(settings):
    settings.HEARTBEAT_INTERVAL_SECONDS = 30
    assert stand_in(waited_seconds=5) is False  # the worker just started; beat may not have yet
    assert not HealthMetric.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_worker_raises_and_resolves_the_beat_alert_while_beat_is_stopped(celery_worker_process, http_sink, tmp_path):
    flag_create(data={"name": "external_alerts", "enabled": True, "rollout_percent": 100}, actor=SYSTEM)
    slack = channel_create(
        data={"name": "ops", "kind": "slack", "url": f"http://127.0.0.1:{http_sink.port}/services/T/B/x"}, actor=SYSTEM
    )
    rule = AlertRule.objects.get(name="celery beat silent")
    rule_update(rule=rule, changes={"channels": [slack.pk]}, actor=SYSTEM)
    beat_heartbeat(600)  # beat stopped ten minutes ago; nothing else runs the checks

    intervals = {
        "HEARTBEAT_INTERVAL_SECONDS": "2",
        "WORKER_HEARTBEAT_SECONDS": "1",
        "HEALTH_CHECK_INTERVAL_SECONDS": "2",
    }
    queue, log = celery_worker_process(**intervals)
    fired = http_sink.wait_for(lambda r: b"celery beat silent" in r.body and b"FIRING" in r.body.upper(), seconds=60)
    assert fired, log.read_text()[-4000:]
    alert = Alert.objects.get(rule=rule)
    assert alert.state == AlertState.FIRING and alert.component == "celery-beat"
    assert "celery-beat:heartbeatAge" in json.loads(fired[0].body)["text"]
    # The worker judged itself alive by its own heartbeat, not by a ping.
    assert HealthMetric.objects.filter(component="celery-workers").latest("time").status == PASS

    # Beat comes back (on the worker's queue): its heartbeat and its own run of the checks resolve the alert.
    beat = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "controlplane", "beat", "--schedule", str(tmp_path / "schedule")],
        cwd=BASE_DIR,
        env=subprocess_env(DATABASE_URL=test_database_url(), CELERY_QUEUE=queue, **intervals),
        stdout=(tmp_path / "beat.log").open("w"),
        stderr=subprocess.STDOUT,
    )
    try:
        resolved = http_sink.wait_for(lambda r: b"celery beat silent" in r.body and b"RESOLVED" in r.body.upper(), 60)
        assert resolved, log.read_text()[-4000:] + (tmp_path / "beat.log").read_text()[-2000:]
    finally:
        beat.terminate()
        beat.wait(timeout=30)
    alert.refresh_from_db()
    assert alert.state == AlertState.RESOLVED and alert.resolved_at is not None
    assert HealthMetric.objects.filter(component="celery-beat").latest("time").status != FAIL
