"""Beat's scheduled run, on a real worker: checks stored as metrics, an alert fires, Slack is told."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

import pytest

from alerting.models import Alert, AlertRule
from alerting.services import channel_create, rule_update
from controlplane.audit import Actor
from flags.services import flag_create
from monitoring.models import HealthMetric, MonitoredEndpoint
from tests.conftest import BASE_DIR, subprocess_env, test_database_url

pytestmark = pytest.mark.django_db(transaction=True)


def test_beat_and_worker_store_metrics_and_fire_an_alert_to_slack(http_sink, tmp_path):
    actor = Actor.system("tests")
    flag_create(data={"name": "external_alerts", "enabled": True, "rollout_percent": 100}, actor=actor)
    MonitoredEndpoint.objects.create(name="frontend", url="http://127.0.0.1:1/", timeout_ms=300)
    slack = channel_create(
        data={"name": "ops-slack", "kind": "slack", "url": f"http://127.0.0.1:{http_sink.port}/services/T0/B0/x"},
        actor=actor,
    )
    rule = AlertRule.objects.get(name="any check failing 3 times running")
    rule_update(rule=rule, changes={"channels": [slack.pk]}, actor=actor)

    queue = f"e2e-{uuid.uuid4().hex[:10]}"
    env = subprocess_env(DATABASE_URL=test_database_url(), CELERY_QUEUE=queue, HEALTH_CHECK_INTERVAL_SECONDS="2")
    celery = [sys.executable, "-m", "celery", "-A", "controlplane"]
    worker_log, beat_log = tmp_path / "worker.log", tmp_path / "beat.log"
    worker = subprocess.Popen(
        [*celery, "worker", "--pool", "solo", "-Q", queue, "-n", f"{queue}@%h", "--without-gossip", "--without-mingle"],
        cwd=BASE_DIR, env=env, stdout=worker_log.open("w"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    beat = subprocess.Popen(
        [*celery, "beat", "--loglevel", "INFO", "--schedule", str(tmp_path / "beat-schedule")],
        cwd=BASE_DIR, env=env, stdout=beat_log.open("w"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        received = http_sink.wait_for(lambda r: b"endpoint:frontend" in r.body, seconds=120)
        assert received, f"worker:\n{worker_log.read_text()[-4000:]}\nbeat:\n{beat_log.read_text()[-2000:]}"
    finally:
        for process in (beat, worker):
            process.terminate()
        for process in (beat, worker):
            process.wait(timeout=30)

    message = json.loads(received[0].body)
    assert "endpoint:frontend" in message["text"] and "firing" in message["text"].lower()
    failures = HealthMetric.objects.filter(component="endpoint:frontend", status="fail")
    assert failures.count() >= 3
    assert HealthMetric.objects.filter(component="database", status="pass").exists()
    alert = Alert.objects.get(rule=rule, dedup_key__contains="endpoint:frontend")
    assert alert.state == "firing" and alert.fired_at is not None
    assert "Sending due task health-checks" in beat_log.read_text()
