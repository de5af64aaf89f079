"""Health endpoints: shape, media type, auth, and what they say when a dependency is down."""

from __future__ import annotations

import json
import socket
import subprocess
import threading

import pytest

from tests.conftest import manage, subprocess_env

pytestmark = pytest.mark.django_db
MEDIA = "application/health+json"


def test_live_has_no_io_and_no_cache(client, django_assert_num_queries):
    with django_assert_num_queries(0):
        response = client.get("/health/live")
    assert response.status_code == 200 and response["Content-Type"] == MEDIA
    assert response["Cache-Control"] == "no-store" and response.json()["status"] == "pass"


def test_ready_gives_only_a_status_per_component(client):
    response = client.get("/health/ready", HTTP_HOST="10.1.2.3")  # a load balancer probes by address
    assert response.status_code == 200 and response["Content-Type"] == MEDIA
    body = response.json()
    assert body["status"] == "pass"
    assert body["checks"] == {"database:responseTime": [{"status": "pass"}], "cache:responseTime": [{"status": "pass"}]}


def test_detailed_reports_need_the_monitoring_scope(client, api_client):
    assert client.get("/api/deployment/health/comprehensive").status_code == 401
    assert api_client("flags:read").get("/api/deployment/health/enhanced").status_code == 403


def test_comprehensive_report_shape(api_client):
    response = api_client("monitoring:read").get("/api/deployment/health/comprehensive")
    assert response["Content-Type"] == MEDIA and response["Cache-Control"] == "no-store"
    body = response.json()
    # No worker or beat runs in this test: that is a fail, so 503.
    assert body["status"] == "fail" and response.status_code == 503
    database = body["checks"]["database:responseTime"][0]
    assert set(database) >= {"componentType", "observedValue", "observedUnit", "status", "time", "output"}
    assert database["componentType"] == "datastore" and database["observedUnit"] == "ms"
    assert body["checks"]["celery-beat:heartbeatAge"][0]["status"] == "fail"


@pytest.mark.parametrize(("production", "unset"), [(False, "pass"), (True, "warn")])
def test_enhanced_is_ready_plus_integrations(api_client, settings, production, unset):
    settings.PRODUCTION, settings.SENTRY_DSN = production, ""
    body = api_client("monitoring:read").get("/api/deployment/health/enhanced").json()
    assert set(body["checks"]) == {
        "database:responseTime", "cache:responseTime", "celery-beat:heartbeatAge", "sentry:configured",
        "alert-channels:enabled",
    }  # fmt: skip
    # No Sentry and no channel: a development install is healthy without them, production is not.
    assert body["checks"]["alert-channels:enabled"][0]["status"] == unset
    assert body["checks"]["sentry:configured"][0]["status"] == unset


def test_every_endpoint_is_health_json_and_never_cached(client, api_client, settings):
    reader = api_client("monitoring:read")
    responses = [
        client.get("/health/live"),
        client.get("/health/ready"),
        reader.get("/api/deployment/health/enhanced"),
        reader.get("/api/deployment/health/comprehensive"),
    ]
    for response in responses:
        assert response["Content-Type"] == MEDIA and response["Cache-Control"] == "no-store"
    settings.CONTROLPLANE_RELEASE = ""
    assert "version" not in reader.get("/api/deployment/health/enhanced").json()  # a string or nothing
    settings.CONTROLPLANE_RELEASE = "v42"
    assert reader.get("/api/deployment/health/enhanced").json()["version"] == "v42"


def test_ready_answers_200_on_warn(client, settings):
    settings.HEALTH_SLOW_MS = -1  # every answer is "slow": database and cache warn
    response = client.get("/health/ready")
    assert response.status_code == 200 and response.json()["status"] == "warn"
    assert response.json()["checks"]["database:responseTime"] == [{"status": "warn"}]


def test_probes_are_counted_in_request_metrics(client):
    from monitoring.models import RequestRollup
    from monitoring.request_metrics import flush

    client.get("/health/live")
    client.get("/health/ready")
    client.get("/health/ready")
    flush()
    counts = dict(RequestRollup.objects.values_list("view", "count"))
    assert counts["health-live"] == 1 and counts["health-ready"] == 2
    # Shown per view, but not in the overall figures the latency and error-rate alerts read.
    from datetime import timedelta

    from django.utils import timezone

    from monitoring.selectors import request_figures, request_figures_by_view

    since = timezone.now() - timedelta(minutes=5)
    assert request_figures_by_view(since)["health-ready"].count == 2
    assert request_figures(since).count == 0


def test_failing_health_reports_and_metrics_scrapes_stay_out_of_the_request_alerts(api_client, alerts_on):
    """A monitor polling the detailed report while a check fails gets 503s, slow ones; Prometheus scrapes
    /metrics. Neither is a request of the product: they must not raise the error-rate or p95 alert too."""
    from datetime import timedelta

    from django.utils import timezone

    from alerting.models import Alert
    from alerting.services import alert_rules_evaluate
    from monitoring.request_metrics import flush
    from monitoring.selectors import request_figures, request_figures_by_view

    reader = api_client("monitoring:read")
    for path in ("/api/deployment/health/comprehensive", "/api/deployment/health/enhanced"):
        assert reader.get(path).status_code == 503  # no worker and no beat in this test
    assert reader.get("/metrics").status_code == 200
    assert reader.get("/api/deployment/performance/dashboard").status_code == 200
    flush()
    since = timezone.now() - timedelta(minutes=5)
    by_view = request_figures_by_view(since)
    assert by_view["api-health-comprehensive"].errors == 1 and by_view["api-health-enhanced"].errors == 1
    assert by_view["metrics"].count == 1
    overall = request_figures(since)
    assert (overall.count, overall.errors) == (1, 0)  # the performance dashboard alone
    alert_rules_evaluate()
    assert not Alert.objects.filter(rule__kind__in=["error_rate", "p95_latency_ms"]).exists()


@pytest.mark.skipif(
    "not __import__('django.conf').conf.settings.DATABASES['default']['ENGINE'].endswith('postgresql')",
    reason="needs PostgreSQL (DATABASE_URL): the embedded SQLite has no server to drop connections",
)
def test_ready_survives_the_database_dropping_its_connections(client):
    """After a restart or failover the check threads' kept connections are dead: not a false 503."""
    from django.db import connection

    for _ in range(5):  # several pool threads, each with a connection of its own
        assert client.get("/health/ready").status_code == 200
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        assert cursor.fetchone()[0] >= 1
    statuses = [client.get("/health/ready").status_code for _ in range(8)]
    assert statuses == [200] * 8


def test_redis_stopped_ready_fails_on_cache_and_live_stays_up(client, private_redis_cache):
    server, _ = private_redis_cache
    assert client.get("/health/ready").status_code == 200
    server.kill()
    server.wait()
    response = client.get("/health/ready")
    assert response.status_code == 503
    assert response.json()["checks"]["cache:responseTime"] == [{"status": "fail"}]
    assert response.json()["checks"]["database:responseTime"] == [{"status": "pass"}]
    assert client.get("/health/live").status_code == 200


@pytest.fixture
def silent_database():
    """A TCP port that accepts connections and never answers: a hung PostgreSQL."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    listener.close()


@pytest.mark.parametrize("kind", ["refused", "hung"])
def test_database_down_ready_answers_503_within_its_deadline(tmp_path, silent_database, kind):
    port = 1 if kind == "refused" else silent_database
    code = (
        "import json, time; from django.test import Client; t = time.monotonic();"
        "r = Client().get('/health/ready', HTTP_HOST='10.0.0.9');"
        "print(json.dumps({'status': r.status_code, 'body': json.loads(r.content), 'seconds': time.monotonic() - t}))"
    )
    result = subprocess.run(
        manage("shell", "--verbosity", "0", "-c", code),
        env=subprocess_env(
            CONTROLPLANE_VAR_DIR=str(tmp_path),
            DATABASE_URL=f"postgres://postgres@127.0.0.1:{port}/test",
            DATABASE_CONNECT_TIMEOUT="30",  # far longer than the deadline: the deadline must answer
            HEALTH_CHECK_TIMEOUT="1",
            HEALTH_DEADLINE="1",
            LOG_LEVEL="CRITICAL",
        ),
        capture_output=True,
        text=True,
        timeout=25,
    )
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["status"] == 503
    assert report["body"]["checks"]["database:responseTime"] == [{"status": "fail"}]
    assert report["seconds"] < 10  # bounded by the 1 s deadline, not the 30 s connect timeout
