"""The evaluation rule and its compatibility with Unleash's bucketing."""

from __future__ import annotations

import pytest

from flags.evaluation import CompiledFlag, TargetingKeyMissing, bucket, evaluate, on_for


def flag(enabled=True, rollout=0, keys=()):
    return CompiledFlag(name="chat", enabled=enabled, rollout_percent=rollout, targeting_keys=frozenset(keys))


def test_buckets_match_unleash_clients():
    # The cross-client vectors of Unleash's SDKs (group id, user id -> normalised value).
    assert bucket("gr1", "123") == 73
    assert bucket("groupX", "999") == 25


def test_disabled_is_off_for_everyone_even_targeted():
    assert evaluate(flag(enabled=False, rollout=100, keys=["u1"]), "u1") == (False, "DISABLED")
    assert evaluate(flag(enabled=False, rollout=50), None) == (False, "DISABLED")


def test_targeted_user_gets_it():
    assert evaluate(flag(rollout=0, keys=["u1"]), "u1") == (True, "TARGETING_MATCH")


@pytest.mark.parametrize(("rollout", "value"), [(0, False), (100, True)])
def test_static_for_everyone(rollout, value):
    assert evaluate(flag(rollout=rollout), "anyone") == (value, "STATIC")
    assert evaluate(flag(rollout=rollout), None) == (value, "STATIC")


def test_split_follows_the_bucket():
    f = flag(rollout=30)
    for key in [f"user-{i}" for i in range(300)]:
        value, reason = evaluate(f, key)
        assert reason == "SPLIT" and value == (bucket("chat", key) <= 30)


def test_split_is_deterministic_and_close_to_the_percentage():
    f = flag(rollout=25)
    results = [evaluate(f, f"user-{i}")[0] for i in range(20_000)]
    assert results == [evaluate(f, f"user-{i}")[0] for i in range(20_000)]
    assert 0.23 < sum(results) / len(results) < 0.27


def test_raising_the_rollout_keeps_everyone_who_had_it():
    keys = [f"user-{i}" for i in range(2000)]
    at_10 = {k for k in keys if evaluate(flag(rollout=10), k)[0]}
    at_50 = {k for k in keys if evaluate(flag(rollout=50), k)[0]}
    assert at_10 < at_50


def test_non_targeted_user_with_keys_and_rollout():
    f = flag(rollout=0, keys=["u1"])
    assert evaluate(f, "u2") == (False, "SPLIT")
    assert evaluate(flag(rollout=100, keys=["u1"]), "u2") == (True, "SPLIT")


@pytest.mark.parametrize(("rollout", "keys"), [(50, ()), (1, ()), (99, ()), (0, ["u1"]), (40, ["u1"])])
def test_key_dependent_flag_without_a_key_is_an_error(rollout, keys):
    with pytest.raises(TargetingKeyMissing):
        evaluate(flag(rollout=rollout, keys=keys), None)


def test_full_rollout_with_targeting_keys_is_on_without_a_key():
    assert evaluate(flag(rollout=100, keys=["u1"]), None) == (True, "STATIC")


def test_on_for_summaries():
    assert on_for(flag(enabled=False)) == "off for everyone (disabled)"
    assert on_for(flag(rollout=100)) == "on for everyone"
    assert on_for(flag(rollout=0)) == "off for everyone (0 % rollout)"
    assert on_for(flag(rollout=0, keys=["a", "b"])) == "on for 2 named users only"
    assert on_for(flag(rollout=20, keys=["a"])) == "on for 20 % of users and 1 named user"
