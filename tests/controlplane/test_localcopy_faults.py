"""The in-process copies under faults: a database that cannot be read (the copy kept on disk), a cache that
hangs (one short look per back-off, other threads never wait), a use that cannot be recorded."""

from __future__ import annotations

import logging
import stat
import threading
import time
from urllib.parse import urlsplit

import pytest
from django.core.cache import cache
from django.db import connection

from controlplane.localcopy import CACHE_BACKOFF_FIRST, LocalCopy, LocalCopyUnavailable
from controlplane.models import ApiToken
from tests.conftest import service_url
from tests.faultproxy import FaultProxy

URL = "/api/deployment/config/production"


class Rows:
    """What a test's copy loads: a value that can change, or a database that cannot be read."""

    def __init__(self, value: object) -> None:
        self.value, self.down, self.loads = value, False, 0

    def load(self) -> object:
        self.loads += 1
        if self.down:
            raise ConnectionRefusedError("the database cannot be read")
        return self.value


@pytest.fixture
def var_dir(settings, tmp_path):
    settings.VAR_DIR = tmp_path
    return tmp_path


def test_a_loaded_copy_is_kept_on_disk_only_readable_by_its_user_and_only_rewritten_when_it_changes(var_dir):
    rows = Rows({"a": 1})
    copy = LocalCopy("test-disk", rows.load)
    assert copy.get() == {"a": 1}
    path = copy.disk_path()
    assert path == var_dir / "localcopy" / "test-disk.pickle"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    written = path.stat()

    for _ in range(3):  # reloads that find the same rows
        copy.forget()
        assert copy.get() == {"a": 1}
    assert path.stat().st_ino == written.st_ino and path.stat().st_mtime_ns == written.st_mtime_ns

    rows.value = {"a": 2}
    copy.forget()
    assert copy.get() == {"a": 2}
    assert path.stat().st_ino != written.st_ino  # replaced whole (a new file renamed over the old one)
    assert [p.name for p in path.parent.iterdir()] == ["test-disk.pickle"]  # no temporary file left


def test_a_fresh_process_with_the_database_down_serves_the_disk_copy_until_the_rows_answer(var_dir, settings):
    settings.CONTROLPLANE_RELOAD_INTERVAL, settings.CONTROLPLANE_FAULT_RELOAD_SECONDS = 0.1, 0.2
    LocalCopy("test-restart", Rows({"flag": True}).load).get()  # an earlier process wrote its copy

    rows = Rows({"flag": False})
    rows.down = True
    fresh = LocalCopy("test-restart", rows.load)  # a new process: nothing in memory
    assert fresh.get() == {"flag": True}
    rows.down = False  # the database answers again: its rows replace the disk copy at the next reload
    time.sleep(0.3)
    assert fresh.get() == {"flag": False}


def test_with_no_copy_anywhere_it_is_unavailable_and_the_database_is_tried_once_a_second(var_dir):
    rows = Rows({"a": 1})
    rows.down = True
    copy = LocalCopy("test-nothing", rows.load)
    for _ in range(20):
        with pytest.raises(LocalCopyUnavailable):
            copy.get()
    assert rows.loads == 1  # a request in between is refused at once, not after another try
    rows.down = False
    time.sleep(1.1)
    assert copy.get() == {"a": 1}


def test_a_disk_copy_that_others_may_write_is_not_read(var_dir):
    LocalCopy("test-foreign", Rows({"a": 1}).load).get()
    path = var_dir / "localcopy" / "test-foreign.pickle"
    path.chmod(0o666)  # anyone could have put code in it: unpickling it would run that code
    rows = Rows({"a": 2})
    rows.down = True
    with pytest.raises(LocalCopyUnavailable):
        LocalCopy("test-foreign", rows.load).get()


def test_while_one_thread_reloads_the_others_serve_the_copy_they_have(var_dir, settings):
    settings.CONTROLPLANE_RELOAD_INTERVAL = 0
    release = threading.Event()
    loads = []

    def load() -> int:
        loads.append(1)
        if len(loads) > 1:
            release.wait(10)  # a slow reload (a database or cache that hangs)
        return len(loads)

    copy = LocalCopy("test-slow", load)
    assert copy.get() == 1
    cache.set(copy.version_key, "changed", timeout=None)  # another process changed the rows
    slow = threading.Thread(target=copy.get)
    slow.start()
    try:
        deadline = time.monotonic() + 5
        while len(loads) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        started = time.monotonic()
        answers = [copy.get() for _ in range(50)]
        assert answers == [1] * 50 and time.monotonic() - started < 0.5
    finally:
        release.set()
        slow.join(10)
    assert copy.get() == 2


@pytest.mark.service("redis")
def test_a_hanging_cache_is_asked_once_per_back_off_and_the_rows_still_reload(var_dir, settings):
    redis_url = urlsplit(service_url("redis"))
    with FaultProxy(redis_url.hostname, redis_url.port or 6379) as proxy:
        settings.CACHES = {
            "default": {
                "BACKEND": "django_redis.cache.RedisCache",
                "LOCATION": f"redis://{proxy.address}/15",
                "KEY_PREFIX": "test-localcopy-hang",
                "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.3, "SOCKET_TIMEOUT": 0.3},
            }
        }
        settings.CONTROLPLANE_RELOAD_INTERVAL = 0  # without the fault, every read would look
        settings.CONTROLPLANE_FAULT_RELOAD_SECONDS = 1.0
        rows = Rows("v1")
        copy = LocalCopy("test-hang", rows.load)
        assert copy.get() == "v1"
        proxy.hang()

        slow, started = [], time.monotonic()
        while time.monotonic() - started < 2.5:
            before = time.monotonic()
            value = copy.get()
            if time.monotonic() - before > 0.15:
                slow.append(round(time.monotonic() - before, 2))
            if time.monotonic() - started > 1.2:
                assert value == "v2"  # the rows are read again every fault interval
            elif time.monotonic() - started > 0.5:
                rows.value = "v2"
            time.sleep(0.005)
        # Looks at 0 s, then after 1 s and 2 more: at most two in 2.5 s, each one timeout (no retries).
        assert CACHE_BACKOFF_FIRST == 1.0
        assert 1 <= len(slow) <= 2, slow
        assert all(duration < 0.9 for duration in slow), slow


def _refuse_last_used_writes() -> None:
    """A real database error on the write that records a use, whatever the engine."""
    table = ApiToken._meta.db_table
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute(
                f"CREATE TRIGGER no_last_used BEFORE UPDATE OF last_used_at ON {table} "
                "BEGIN SELECT RAISE(ABORT, 'the database refuses writes'); END"
            )
        else:
            cursor.execute(
                "CREATE FUNCTION no_last_used() RETURNS trigger AS "
                "$$ BEGIN RAISE EXCEPTION 'the database refuses writes'; END $$ LANGUAGE plpgsql"
            )
            cursor.execute(
                f"CREATE TRIGGER no_last_used BEFORE UPDATE ON {table} FOR EACH ROW EXECUTE FUNCTION no_last_used()"
            )


def test_a_use_that_cannot_be_recorded_does_not_fail_the_request(client, make_token, caplog):
    raw = make_token("monitoring:read", name="ci")
    _refuse_last_used_writes()  # in the test's transaction: gone when it rolls back
    with caplog.at_level(logging.WARNING, logger="controlplane.services"):
        response = client.get(URL, HTTP_AUTHORIZATION=f"Bearer {raw}")
        assert response.status_code == 200
        assert ApiToken.objects.get(name="ci").last_used_at is None  # the request went on without it
    warnings = [r for r in caplog.records if "could not record the use" in r.getMessage()]
    assert len(warnings) == 1 and raw not in warnings[0].getMessage()
