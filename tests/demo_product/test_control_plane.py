"""The demo product against a real control plane (live_server): matching_v2_algorithm over OFREP with a
flags:read token, answers kept a few seconds, and the version the demo pipeline's backend step records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from controlplane.audit import Actor
from demo_product.server import Config, DemoProduct, Flags, current_version
from demo_product.traffic import USERS, V2_FLAG
from deployments.demo import record
from flags.evaluation import bucket
from flags.services import flag_create, flag_update

pytestmark = pytest.mark.django_db(transaction=True)
ACTOR = Actor.system("tests")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def v2_flag():
    return flag_create(
        data={"name": V2_FLAG, "enabled": True, "rollout_percent": 10, "targeting_keys": ["user-002"]}, actor=ACTOR
    )


def test_the_flag_comes_over_ofrep_per_user_and_is_kept_a_few_seconds(live_server, make_token, v2_flag):
    clock = Clock()
    flags = Flags(live_server.url, make_token("flags:read", name="demo"), clock=clock)
    answers = {user: flags.is_on(user) for user in USERS}
    assert answers == {user: user == "user-002" or bucket(V2_FLAG, user) <= 10 for user in USERS}
    assert answers["user-002"] is True and not all(answers.values())
    assert flags.calls == len(USERS)

    flag_update(name=V2_FLAG, changes={"rollout_percent": 100}, actor=ACTOR)
    clock.now += 4  # still kept: no call, the old answers
    assert {user: flags.is_on(user) for user in USERS} == answers and flags.calls == len(USERS)
    clock.now += 2  # past the few seconds: asked again, on for everyone
    assert all(flags.is_on(user) for user in USERS) and flags.calls == 2 * len(USERS)


def test_a_token_without_flags_read_or_a_down_control_plane_counts_as_off(live_server, make_token, v2_flag, capsys):
    flag_update(name=V2_FLAG, changes={"rollout_percent": 100}, actor=ACTOR)
    assert Flags(live_server.url, make_token("flags:read", name="good")).is_on("user-001") is True
    refused = Flags(live_server.url, make_token("monitoring:read", name="wrong"))
    assert refused.is_on("user-001") is False
    assert refused.is_on("user-003") is False
    assert capsys.readouterr().out.count("no answer from the control plane (HTTP 403)") == 1  # said once
    down = Flags("http://127.0.0.1:9", "cpt_x")  # nothing listens on port 9 (discard) here
    assert down.is_on("user-001") is False


def test_the_product_serves_what_the_demo_pipeline_deployed_last(tmp_path: Path, live_server, make_token, v2_flag):
    releases = tmp_path / "releases"
    config = tmp_path / "config.json"
    config.write_text(
        json.dumps(
            {
                "port": 0,
                "control_plane_url": live_server.url,
                "token": make_token("flags:read", name="demo"),
                "ping_path": "/ping/00000000-0000-0000-0000-000000000000",
                "releases_file": str(releases),
            }
        )
    )
    product = DemoProduct(Config.load(config))
    assert product.health() == {"status": "ok", "version": "v0"}
    # The README's deployments: v1 and v2 switch the backend; bad-3 fails before switching, and its
    # backend rollback leaves v2 serving; a later failure of v4 takes v4 off again.
    record(releases, "backend", "v1")
    record(releases, "backend", "v2")
    record(releases, "backend-rollback", "bad-3")
    assert current_version(releases) == "v2"
    record(releases, "backend", "slow-4")
    product.tick()
    assert product.health()["version"] == "slow-4"
    record(releases, "backend-rollback", "slow-4")
    product.tick()
    assert product.health()["version"] == "v2"
    assert product.flags.calls > 0  # the ticks asked the live control plane for matches' users
