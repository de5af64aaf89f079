"""The job monitors' ping URL through the test client: states, output, durations, limits, bad input."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.test import Client

from monitoring.job_monitors import OUTPUT_LIMIT_BYTES
from monitoring.models import JobMonitor, JobState

pytestmark = pytest.mark.django_db


@pytest.fixture
def monitor() -> JobMonitor:
    return JobMonitor.objects.create(name=f"digest-{uuid.uuid4().hex[:8]}", period_seconds=3600)


def test_success_ping_by_get_moves_a_new_monitor_up(client: Client, monitor: JobMonitor) -> None:
    response = client.get(monitor.ping_path())
    assert response.status_code == 200 and response.content == b"OK\n"
    assert response["Content-Type"].startswith("text/plain")
    monitor.refresh_from_db()
    assert monitor.state == JobState.UP and monitor.last_ping is not None and monitor.last_ping_kind == "success"


def test_ping_needs_no_login_session_or_csrf_and_is_one_read_and_one_update(
    monitor: JobMonitor, django_assert_num_queries
) -> None:
    """The key is known from the in-process copy; applying the buffered ping (at once in tests) is one
    read and one UPDATE."""
    from monitoring.job_monitors import ping_keys

    assert monitor.ping_key in ping_keys.get()
    strict = Client(enforce_csrf_checks=True)
    with django_assert_num_queries(2):
        response = strict.post(monitor.ping_path(), data=b"done", content_type="text/plain")
    assert response.status_code == 200
    assert "sessionid" not in response.cookies and "csrftoken" not in response.cookies
    monitor.refresh_from_db()
    assert monitor.last_output == "done"


def test_start_then_success_records_the_duration(client: Client, monitor: JobMonitor) -> None:
    assert client.get(monitor.ping_path() + "/start").status_code == 200
    monitor.refresh_from_db()
    assert monitor.state == JobState.NEW and monitor.last_start is not None and monitor.last_ping is None
    # The job ran for 90 s: move its start back rather than wait.
    JobMonitor.objects.filter(pk=monitor.pk).update(last_start=monitor.last_start - timedelta(seconds=90))
    assert client.post(monitor.ping_path(), data=b"sent 120 mails", content_type="text/plain").status_code == 200
    monitor.refresh_from_db()
    assert monitor.state == JobState.UP
    assert monitor.last_duration is not None and 90 <= monitor.last_duration.total_seconds() < 100
    assert monitor.last_output == "sent 120 mails"
    # A success with no start since the last ping has no duration.
    client.get(monitor.ping_path())
    monitor.refresh_from_db()
    assert monitor.last_duration is None and monitor.last_output == "sent 120 mails"  # a GET keeps the output


@pytest.mark.parametrize(
    ("suffix", "state", "exit_status"),
    [("/fail", "down", None), ("/1", "down", 1), ("/255", "down", 255), ("/0", "up", 0)],
)
def test_fail_and_exit_status(
    client: Client, monitor: JobMonitor, suffix: str, state: str, exit_status: int | None
) -> None:
    client.get(monitor.ping_path())
    response = client.post(monitor.ping_path() + suffix, data=b"Traceback ...", content_type="text/plain")
    assert response.status_code == 200
    monitor.refresh_from_db()
    assert monitor.state == state and monitor.last_exit_status == exit_status
    assert monitor.last_output == "Traceback ..."


def test_a_paused_monitor_resumes_on_a_ping(client: Client, monitor: JobMonitor) -> None:
    JobMonitor.objects.filter(pk=monitor.pk).update(state=JobState.PAUSED)
    client.get(monitor.ping_path())
    monitor.refresh_from_db()
    assert monitor.state == JobState.UP


def test_a_long_body_is_cut_and_says_so(client: Client, monitor: JobMonitor) -> None:
    body = ("é" * 6000).encode()  # 12,000 bytes
    assert client.post(monitor.ping_path(), data=body, content_type="text/plain").status_code == 200
    monitor.refresh_from_db()
    kept, note = monitor.last_output.rsplit("\n", 1)
    assert len(kept.encode()) <= OUTPUT_LIMIT_BYTES and kept.startswith("éé")
    assert note == f"[output cut: the first {OUTPUT_LIMIT_BYTES} of 12000 bytes are kept]"


@pytest.mark.parametrize(
    "path",
    [
        "/ping/6f1c2a0e-9b7d-4e1a-8c3f-2d5b7a9e0c11",  # fixed: pytest-xdist collects the same ids in each process
        "/ping/6f1c2a0e-9b7d-4e1a-8c3f-2d5b7a9e0c12/start",
        "/ping/not-a-uuid",
        "/ping/not-a-uuid/fail",
        "/ping/12345678-1234-1234-1234-1234567890zz",
        "/ping/",
        "/ping",
        "/ping/6f1c2a0e-9b7d-4e1a-8c3f-2d5b7a9e0c13/start/again",
    ],
)
def test_unknown_or_malformed_key_is_a_plain_404(client: Client, monitor: JobMonitor, path: str) -> None:
    response = client.post(path, data=b"x", content_type="text/plain")
    assert response.status_code == 404 and response.content == b"not found\n"
    assert response["Content-Type"].startswith("text/plain")
    assert JobMonitor.objects.get(pk=monitor.pk).state == JobState.NEW


@pytest.mark.parametrize("action", ["256", "-1", "1000", "ok", "00000", "²"])
def test_bad_exit_status_is_refused_and_changes_nothing(client: Client, monitor: JobMonitor, action: str) -> None:
    response = client.get(f"{monitor.ping_path()}/{action}")
    assert response.status_code == 400 and b"exit status from 0 to 255" in response.content
    monitor.refresh_from_db()
    assert monitor.state == JobState.NEW and monitor.last_ping is None


def test_other_methods_are_refused(client: Client, monitor: JobMonitor) -> None:
    response = client.delete(monitor.ping_path())
    assert response.status_code == 405 and response["Allow"] == "GET, HEAD, POST"
    assert JobMonitor.objects.get(pk=monitor.pk).state == JobState.NEW


def test_pings_are_rate_limited_per_monitor(client: Client, monitor: JobMonitor, settings) -> None:
    settings.JOB_PING_RATE_PER_SECOND = 3
    other = JobMonitor.objects.create(name=f"other-{uuid.uuid4().hex[:8]}")
    # Eight pings take well under two seconds: at most three are taken in each second they span.
    responses = [client.get(monitor.ping_path()) for _ in range(8)]
    codes = [r.status_code for r in responses]
    assert codes[0] == 200 and 2 <= codes.count(429) and codes.count(200) <= 6
    limited = [r for r in responses if r.status_code == 429]
    assert all(r["Retry-After"] == "1" and r.content.startswith(b"rate limited") for r in limited)
    # Another monitor has its own count.
    assert client.get(other.ping_path()).status_code == 200


@pytest.mark.django_db(transaction=True)
def test_on_postgresql_a_ping_is_applied_and_leaves_the_connection_as_it_was() -> None:
    """Pings are applied in batches with an ordinary (durable) commit: no session setting is left behind."""
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("synchronous_commit is PostgreSQL's")
    monitor = JobMonitor.objects.create(name=f"commit-{uuid.uuid4().hex[:8]}")
    assert Client().post(monitor.ping_path(), data=b"ok", content_type="text/plain").status_code == 200
    monitor.refresh_from_db()
    assert monitor.state == JobState.UP and monitor.last_output == "ok"
    with connection.cursor() as cursor:  # the same connection, in autocommit: the setting did not stay
        cursor.execute("SHOW synchronous_commit")
        assert cursor.fetchone()[0] == "on"


def test_the_ping_key_never_reaches_the_logs(client: Client, monitor: JobMonitor, caplog, capsys) -> None:
    import json
    import logging
    import sys
    from types import SimpleNamespace

    from gunicorn.config import Config

    from controlplane.gunicorn_logging import JsonAccessLogger
    from controlplane.logging import JsonFormatter, TextFormatter

    key = str(monitor.ping_key)
    with caplog.at_level(logging.INFO, logger="controlplane.request"):
        client.get(f"{monitor.ping_path()}/start")
    [record] = [r for r in caplog.records if r.name == "controlplane.request"]
    for formatter in (JsonFormatter(), TextFormatter()):
        line = formatter.format(record)
        assert key not in line and "/ping/[redacted]/start" in line

    cfg = Config()
    cfg.set("accesslog", "-")
    response = SimpleNamespace(headers=[], status="200 OK", status_code=200, sent=3)
    environ = {"REMOTE_ADDR": "127.0.0.1", "REQUEST_METHOD": "GET", "PATH_INFO": f"/ping/{key}/1"}
    JsonAccessLogger(cfg).access(response, None, environ, timedelta(milliseconds=3))
    sys.stdout.flush()
    assert json.loads(capsys.readouterr().out)["path"] == "/ping/[redacted]/1"


def test_a_form_encoded_body_is_kept_as_sent(client: Client, monitor: JobMonitor) -> None:
    # curl -d sends its data form-encoded: the output is the raw body all the same.
    response = client.post(
        monitor.ping_path(), data="rows=12&skipped=0", content_type="application/x-www-form-urlencoded"
    )
    assert response.status_code == 200
    monitor.refresh_from_db()
    assert monitor.last_output == "rows=12&skipped=0"


def test_a_ping_is_recorded_when_the_cache_refuses(client: Client, monitor: JobMonitor, settings) -> None:
    """The rate limit's counter lives in the shared cache; with the cache down the ping still counts."""
    from tests.conftest import free_port

    settings.CACHES = {
        **settings.CACHES,
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{free_port()}/0",  # nothing listens there
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.5, "SOCKET_TIMEOUT": 0.5},
        },
    }
    response = client.get(f"/ping/{monitor.ping_key}")
    assert (response.status_code, response.content) == (200, b"OK\n")
    monitor.refresh_from_db()
    assert monitor.state == JobState.UP


def test_a_burst_of_unknown_keys_makes_a_bounded_number_of_queries(
    client: Client, monitor: JobMonitor, monkeypatch, django_assert_max_num_queries
) -> None:
    """Keys the local copy does not hold are looked up in the database within an in-process bucket
    (here 3 look-ups, no refill): past it, an unknown key is a 404 without a query."""
    from monitoring import job_monitors

    monkeypatch.setattr(job_monitors, "_miss_bucket", job_monitors._MissBucket(rate=0.0, burst=3.0))
    keys = [uuid.UUID(int=n + 1) for n in range(50)]
    assert monitor.ping_key in job_monitors.ping_keys.get()  # the local copy loaded (one query) before
    with django_assert_max_num_queries(3):
        answers = {client.get(f"/ping/{key}").status_code for key in keys}
    assert answers == {404}
    # A known monitor still pings while the bucket is empty: its key is in the local copy.
    assert client.get(monitor.ping_path()).status_code == 200
    monitor.refresh_from_db()
    assert monitor.state == JobState.UP


def test_a_key_found_in_the_database_is_known_from_then_on_without_a_look_up(
    client: Client, monkeypatch, django_assert_num_queries
) -> None:
    """A monitor made in another process since this one's last look at the keys: the first ping looks it
    up (one query) and the next ones need none, even with the bucket empty."""
    from monitoring import job_monitors

    job_monitors.ping_keys.get()  # loaded now; bulk_create sends no post_save, so no bump reaches it
    (made,) = JobMonitor.objects.bulk_create(
        [JobMonitor(name=f"elsewhere-{uuid.uuid4().hex[:8]}", period_seconds=3600)]
    )
    assert made.ping_key not in job_monitors.ping_keys.get()
    monkeypatch.setattr(job_monitors, "_miss_bucket", job_monitors._MissBucket(rate=0.0, burst=1.0))
    monkeypatch.setattr(job_monitors, "_found_keys", set())
    assert job_monitors.ping_key_known(made.ping_key)
    with django_assert_num_queries(0):
        assert job_monitors.ping_key_known(made.ping_key)
        assert not job_monitors.ping_key_known(uuid.UUID(int=7))
