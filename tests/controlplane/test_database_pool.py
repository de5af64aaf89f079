"""DATABASE_POOL_SIZE: psycopg's pool through Django, in gunicorn started as production starts it, with a
fault proxy of the test's own between the workers and the real PostgreSQL: a pooled connection that the
database dropped (a restart) is never handed to a request, and a refusing database is a fast 503."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from urllib.parse import urlsplit

import pytest

from tests.conftest import test_database_url
from tests.faultproxy import FaultProxy

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.service("postgres"),
    pytest.mark.skipif(
        "not __import__('django.conf').conf.settings.DATABASES['default']['ENGINE'].endswith('postgresql')",
        reason="needs the suite on PostgreSQL (DATABASE_URL): the pool is PostgreSQL's",
    ),
]


def ready(base: str) -> tuple[int, dict, float]:
    started = time.monotonic()
    try:
        with urllib.request.urlopen(base + "/health/ready", timeout=30) as response:
            status, body = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, body = error.code, error.read()
    return status, json.loads(body), time.monotonic() - started


def status_api(base: str, token: str) -> tuple[int, dict]:
    """An API call that reads the database in the request's own thread (readiness checks use their own)."""
    request = urllib.request.Request(base + "/api/deployment/status", headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def through(url: str, proxy: FaultProxy) -> str:
    parts = urlsplit(url)
    credentials = parts.netloc.rpartition("@")[0]
    return parts._replace(netloc=f"{credentials}@{proxy.address}").geturl()


def test_the_pool_hands_out_no_dropped_connection_and_refuses_fast(gunicorn_server, make_token, tmp_path):
    token = make_token("deploy")
    database_url = urlsplit(test_database_url())
    with FaultProxy(database_url.hostname, database_url.port or 5432) as database:
        base = gunicorn_server(
            workers=1,
            DATABASE_URL=through(test_database_url(), database),
            DATABASE_POOL_SIZE="2",
            DATABASE_CONN_MAX_AGE="0",
            CONTROLPLANE_VAR_DIR=str(tmp_path),
        )
        for _ in range(3):  # the pool holds its connections
            assert ready(base)[0] == 200
            assert status_api(base, token)[0] == 200
        time.sleep(0.5)

        database.cut()  # what a database restart does to every open connection
        # Each connection is checked as it leaves the pool (Django does so with CONN_HEALTH_CHECKS): the
        # dropped ones are replaced, and no request gets one (the first waits for psycopg_pool's back-off).
        answers = [status_api(base, token) for _ in range(4)]
        assert [status for status, _ in answers] == [200] * 4, answers
        status, body, _ = ready(base)
        assert status == 200, body

        database.refuse()
        status, body, took = ready(base)
        assert status == 503, body
        assert took < 10, took  # the readiness check's own limit, not a request stuck in the pool

        database.heal()
        deadline = time.monotonic() + 10
        while (status := ready(base)[0]) != 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert status == 200
