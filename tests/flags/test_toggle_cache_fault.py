"""A toggle whose change is committed answers what it saved, even when the cache refuses afterwards."""

from __future__ import annotations

import json
import uuid
from urllib.parse import urlsplit

import pytest

from controlplane.audit import Actor
from controlplane.models import AuditEvent
from flags.models import Flag
from flags.services import flag_create
from tests.conftest import service_url
from tests.faultproxy import FaultProxy

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.service("redis")]


@pytest.fixture
def cache_proxy(settings):
    """The shared cache on the machine's Redis, reached through a FaultProxy the test can break."""
    target = urlsplit(service_url("redis"))
    with FaultProxy(target.hostname or "127.0.0.1", target.port or 6379) as proxy:
        settings.CACHES = {
            "default": {
                "BACKEND": "django_redis.cache.RedisCache",
                "LOCATION": f"redis://{proxy.address}{target.path or '/15'}",
                "KEY_PREFIX": f"test-{uuid.uuid4().hex[:8]}",  # the server is shared: keys of our own
                "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.5, "SOCKET_TIMEOUT": 0.5},
            }
        }
        settings.CONTROLPLANE_RELOAD_INTERVAL = 0
        yield proxy


def toggle(client, body=None):
    data = "" if body is None else json.dumps(body)
    return client.post("/api/deployment/features/chat/toggle", data=data, content_type="application/json")


def test_a_flag_created_while_the_cache_refuses_is_kept(cache_proxy, caplog):
    cache_proxy.refuse()
    flag_create(data={"name": "chat", "enabled": True}, actor=Actor.system("tests"))
    assert Flag.objects.get(name="chat").enabled is True
    assert any("waffle's cache for flags.Flag chat not cleared" in r.getMessage() for r in caplog.records)


def test_toggle_with_the_cache_refusing_answers_the_saved_state_and_a_retry_is_safe(api_client, cache_proxy, caplog):
    flag_create(data={"name": "chat", "enabled": False}, actor=Actor.system("tests"))
    client = api_client("flags:write")
    assert toggle(client, {"rollout_percent": 10}).status_code == 200  # the cache answers: warm
    cache_proxy.refuse()

    response = toggle(client)  # flips: committed, then waffle's flush and the version bump fail
    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["flag"], body["name"], body["changed"], body["enabled"]) == ("chat", "chat", True, True)
    assert Flag.objects.get(name="chat").enabled is True
    messages = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert any("waffle's cache for flags.Flag chat not cleared" in m for m in messages), messages
    assert any("could not publish the new flags version" in m for m in messages), messages

    # The caller could not trust the first answer and retries with the state it wants: no flip back.
    for _ in range(2):
        retry = toggle(client, {"enabled": True})
        assert retry.status_code == 200, retry.content
        assert (retry.json()["changed"], retry.json()["enabled"]) == (False, True)
        assert Flag.objects.get(name="chat").enabled is True
    off = toggle(client, {"enabled": False})
    assert (off.status_code, off.json()["changed"], off.json()["enabled"]) == (200, True, False)
    assert Flag.objects.get(name="chat").enabled is False
    assert AuditEvent.objects.filter(action="flag.toggle").count() == 3  # the retries changed nothing

    cache_proxy.heal()
    healed = toggle(client, {"enabled": True})
    assert (healed.status_code, healed.json()["changed"], healed.json()["enabled"]) == (200, True, True)


def test_a_waffle_switch_saved_while_the_cache_refuses_is_kept(cache_proxy, caplog):
    """waffle's own models clear their cache after commit as well (an operator saves them in admin)."""
    from django.db import transaction
    from waffle.models import Switch

    cache_proxy.refuse()
    with transaction.atomic():
        Switch(name="maintenance", active=True).save()  # as admin's form saves it
    assert Switch.objects.get(name="maintenance").active is True
    assert any("waffle's cache for waffle.Switch maintenance not cleared" in r.getMessage() for r in caplog.records)
