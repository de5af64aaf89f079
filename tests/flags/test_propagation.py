"""A flag change made in one process reaches every gunicorn worker (through the shared cache)."""

from __future__ import annotations

import json
import time
import urllib.request

import pytest
from django.conf import settings

from controlplane.audit import Actor
from flags.services import flag_create, flag_update

pytestmark = pytest.mark.django_db(transaction=True)


def evaluate(base: str, token: str) -> bool:
    request = urllib.request.Request(
        base + "/ofrep/v1/evaluate/flags/chat",
        data=json.dumps({"context": {"targetingKey": "u1"}}).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())["value"]


def test_every_worker_sees_the_change(make_token, gunicorn_server):
    flag_create(data={"name": "chat", "enabled": True, "rollout_percent": 100}, actor=Actor.system())
    token = make_token("flags:read")
    base = gunicorn_server(workers=2)
    # Warm both workers' snapshots with the old value.
    assert all(evaluate(base, token) for _ in range(20))

    flag_update(name="chat", changes={"enabled": False}, actor=Actor.system())  # commits, then bumps
    changed_at = time.monotonic()
    # Each worker looks at the shared version at most once per CONTROLPLANE_RELOAD_INTERVAL, so a
    # worker that checked just before the change may answer the old value until its interval ends.
    # The contract is "within one second"; past that, every answer from whichever worker is new.
    assert settings.CONTROLPLANE_RELOAD_INTERVAL < 1.0
    time.sleep(max(0.0, changed_at + 1.0 - time.monotonic()))
    answers = [evaluate(base, token) for _ in range(40)]
    assert not any(answers), answers
