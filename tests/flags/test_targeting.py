"""The targeting engine (flags.targeting): operators, validation, today's buckets, variants, explanations."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flags import evaluation
from flags.targeting import (
    Constraint,
    Context,
    Dependency,
    FlagDefinition,
    InvalidTargeting,
    Segment,
    Strategy,
    Variant,
    evaluate,
)


def on(constraint: Constraint, **ctx: object) -> bool:
    flag = FlagDefinition("f", strategies=(Strategy("default", constraints=(constraint,)),))
    return evaluate(flag, Context.of(ctx)).enabled


# --- Today's rule, unchanged -------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    key=st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40),
    rollout=st.integers(0, 100),
    named=st.lists(st.text(min_size=1, max_size=8), max_size=3),
    target_named=st.booleans(),
)
def test_todays_flags_answer_as_today_for_every_key(key, rollout, named, target_named):
    keys = set(named) | ({key} if target_named else set())
    old = evaluation.CompiledFlag(name="chat", enabled=True, rollout_percent=rollout, targeting_keys=frozenset(keys))
    new = FlagDefinition.simple("chat", enabled=True, rollout_percent=rollout, targeting_keys=keys)
    value, reason = evaluation.evaluate(old, key)
    result = evaluate(new, Context(user_id=key))
    assert result.enabled is value
    if reason in ("TARGETING_MATCH", "STATIC") or (reason == "SPLIT" and 0 < rollout < 100):
        assert result.reason == reason


def test_buckets_identical_over_many_ids():
    for rollout in (1, 10, 33, 50, 99):
        old = evaluation.CompiledFlag(name="digest", enabled=True, rollout_percent=rollout, targeting_keys=frozenset())
        new = FlagDefinition.simple("digest", enabled=True, rollout_percent=rollout, targeting_keys=())
        for i in range(5000):
            assert evaluate(new, Context(user_id=f"user-{i}")).enabled is evaluation.evaluate(old, f"user-{i}")[0]


def test_disabled_flag_is_off_even_for_named_users():
    flag = FlagDefinition.simple("chat", enabled=False, rollout_percent=100, targeting_keys={"u1"})
    result = evaluate(flag, Context(user_id="u1"))
    assert (result.enabled, result.reason) == (False, "DISABLED")


def test_no_key_with_a_partial_rollout_is_a_coin_toss_and_says_so():
    flag = FlagDefinition.simple("chat", enabled=True, rollout_percent=50, targeting_keys=())
    assert evaluate(flag, Context()).by_chance
    assert not evaluate(flag, Context(user_id="u1")).by_chance
    full = FlagDefinition.simple("chat", enabled=True, rollout_percent=100, targeting_keys=())
    assert evaluate(full, Context()).enabled and not evaluate(full, Context()).by_chance


# --- The fast path answers exactly as the general one ----------------------------------------------


def general_path(flag: FlagDefinition) -> FlagDefinition:
    """The same flag with its fast path switched off, so ``evaluate`` takes the general path."""
    object.__setattr__(flag, "_fast", None)
    return flag


ids = st.one_of(st.none(), st.just(""), st.text(max_size=12), st.sampled_from(["u1", "vip", "\ud800x"]))


@settings(max_examples=400, deadline=None)
@given(
    rollout=st.integers(0, 100),
    named=st.frozensets(st.sampled_from(["", "u1", "vip", "a,b", "\ud800x"]), max_size=3),
    enabled=st.booleans(),
    group=st.sampled_from(["", "grp"]),
    shape=st.integers(0, 4),  # 0: FlagDefinition.simple
    with_ids=st.booleans(),
    user_id=ids,
    session_id=ids,
)
def test_fast_path_answers_as_the_general_path(rollout, named, enabled, group, shape, with_ids, user_id, session_id):
    if shape == 0:
        make = lambda: FlagDefinition.simple("chat", enabled=enabled, rollout_percent=rollout, targeting_keys=named)  # noqa: E731
    else:
        rule = [
            Strategy.user_with_id(named),
            Strategy.flexible_rollout(rollout, group_id=group),
            Strategy("default"),
            Strategy.flexible_rollout(rollout, stickiness="sessionId", group_id=group),  # general path only
        ][shape - 1]
        strategies = ((Strategy.user_with_id(named),) if with_ids and shape != 1 else ()) + (rule,)
        make = lambda: FlagDefinition("chat", enabled=enabled, strategies=strategies)  # noqa: E731
    fast, slow = make(), general_path(make())
    ctx = Context(user_id=user_id, session_id=session_id)
    got, want = evaluate(fast, ctx), evaluate(slow, ctx)
    if want.by_chance:  # a coin toss: only that it is one, and who decided if on
        assert got.by_chance
        assert got.strategy_index == want.strategy_index or got.enabled != want.enabled
    else:
        assert got == want
    assert evaluate(fast, ctx, explain=True).explanation is not None


def test_simple_flags_take_the_fast_path_and_others_do_not():
    assert FlagDefinition.simple("a", enabled=True, rollout_percent=50, targeting_keys={"u"})._fast is not None
    assert FlagDefinition.simple("a", enabled=False, rollout_percent=50, targeting_keys=())._fast is not None
    constrained = Strategy.flexible_rollout(50, constraints=(Constraint("plan", "IN", values=("p",)),))
    assert FlagDefinition("a", strategies=(constrained,))._fast is None
    with_variants = Strategy.flexible_rollout(50, variants=(Variant("x"), Variant("y")))
    assert FlagDefinition("a", strategies=(with_variants,))._fast is None
    assert FlagDefinition("a", dependencies=(Dependency("b"),))._fast is None


def test_fast_path_keeps_a_lone_surrogate_bucket():
    flag = FlagDefinition.simple("chat", enabled=True, rollout_percent=50, targeting_keys=())
    slow = general_path(FlagDefinition.simple("chat", enabled=True, rollout_percent=50, targeting_keys=()))
    for i in range(200):
        ctx = Context(user_id=f"\ud800{i}")
        assert evaluate(flag, ctx) == evaluate(slow, ctx)


def test_general_path_says_a_coin_toss_decided_on_or_off():
    plan = Constraint("plan", "IN", values=("p",))
    for variants in ((), (Variant("x"), Variant("y"))):
        anonymous = FlagDefinition(
            "f", strategies=(Strategy.flexible_rollout(50, constraints=(plan,), variants=variants),)
        )
        assert anonymous._fast is None
        results = [evaluate(anonymous, Context(properties={"plan": "p"})) for _ in range(200)]
        assert all(r.by_chance for r in results)
        assert {r.enabled for r in results} == {True, False}  # 200 tosses: both sides, but for 2**-199
        assert all((r.reason, r.strategy_index) == ("SPLIT", 0) for r in results if r.enabled)
        keyed = [evaluate(anonymous, Context(user_id=f"u{i}", properties={"plan": "p"})) for i in range(50)]
        assert not any(r.by_chance for r in keyed)
    random_rollout = Strategy.flexible_rollout(50, stickiness="random", constraints=(plan,))
    always = FlagDefinition("f", strategies=(random_rollout,))
    assert all(evaluate(always, Context(user_id="u1", properties={"plan": "p"})).by_chance for _ in range(50))
    # As the engine always answered: a flag with a random strategy marks every miss as chancy.
    assert evaluate(always, Context(user_id="u1")).by_chance


def test_variant_draw_walks_the_cumulative_weights_as_the_sdks_do():
    import mmh3

    variants = (Variant("a", weight=0), Variant("b", weight=3), Variant("c", weight=0), Variant("d", weight=5))
    flag = FlagDefinition("f", strategies=(Strategy("default", variants=variants),))
    for i in range(500):
        target = mmh3.hash(f"f:user-{i}".encode(), 86028157, signed=False) % 8 + 1
        counter = chosen = 0
        for v in variants:  # Unleash's selectVariantDefinition
            counter += v.weight
            if counter >= target:
                break
            chosen += 1
        assert evaluate(flag, Context(user_id=f"user-{i}")).variant_name == variants[chosen].name


# --- Operators ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("constraint", "value", "expected"),
    [
        (Constraint("plan", "IN", values=("premium", "business")), "premium", True),
        (Constraint("plan", "IN", values=("premium",)), "Premium", False),
        (Constraint("plan", "IN", values=("premium",), case_insensitive=True), "Premium", True),
        (Constraint("plan", "NOT_IN", values=("free",)), "premium", True),
        (Constraint("plan", "NOT_IN", values=("free",)), "free", False),
        (Constraint("email", "STR_STARTS_WITH", values=("ann",)), "anna@x.eu", True),
        (Constraint("email", "STR_ENDS_WITH", values=(".eu",)), "anna@x.EU", False),
        (Constraint("email", "STR_ENDS_WITH", values=(".eu",), case_insensitive=True), "anna@x.EU", True),
        (Constraint("email", "STR_CONTAINS", values=("@x.",)), "anna@x.eu", True),
        (Constraint("email", "STR_CONTAINS", values=("@x.",), inverted=True), "anna@x.eu", False),
        (Constraint("age", "NUM_EQ", value="30"), "30.0", True),
        (Constraint("age", "NUM_GT", value="30"), "30", False),
        (Constraint("age", "NUM_GTE", value="30"), "30", True),
        (Constraint("age", "NUM_LT", value="30"), "29.5", True),
        (Constraint("age", "NUM_LTE", value="30"), "31", False),
        (Constraint("age", "NUM_GT", value="30"), "not a number", False),
        (Constraint("version", "SEMVER_EQ", value="2.3.0"), "2.3.0", True),
        (Constraint("version", "SEMVER_GT", value="2.3.0"), "2.10.0", True),
        (Constraint("version", "SEMVER_GT", value="2.3.0"), "2.3.0-rc.1", False),
        (Constraint("version", "SEMVER_LT", value="2.3.0"), "2.3.0-rc.1", True),
        (Constraint("version", "SEMVER_LT", value="2.3.0"), "v2.0.0", False),
        (Constraint("signup", "DATE_AFTER", value="2024-01-01T00:00:00Z"), "2024-06-01T00:00:00+02:00", True),
        (Constraint("signup", "DATE_BEFORE", value="2024-01-01T00:00:00Z"), "2024-06-01T00:00:00Z", False),
        (Constraint("city", "REGEX", value="^(berlin|paris)$"), "paris", True),
        (Constraint("city", "REGEX", value="^(berlin|paris)$", case_insensitive=True), "Paris", True),
        (Constraint("city", "REGEX", value="^paris$"), "paris\n", False),  # RE2's $ is the end
        (Constraint("ip", "IN_CIDR", values=("10.0.0.0/8",)), "10.1.2.3", True),
        (Constraint("ip", "IN_CIDR", values=("10.0.0.0/8",), inverted=True), "10.1.2.3", False),
    ],
    ids=lambda v: v if isinstance(v, str | bool) else None,
)
def test_operator(constraint, value, expected):
    field = constraint.field
    assert on(constraint, properties={field: value}) is expected


def test_missing_field_does_not_match_and_inverted_negates_it_as_the_sdks_do():
    assert on(Constraint("plan", "IN", values=("premium",))) is False
    assert on(Constraint("plan", "NOT_IN", values=("premium",))) is True  # nothing is not in anything
    assert on(Constraint("plan", "STR_CONTAINS", values=("p",), inverted=True)) is True


def test_current_time_is_the_contexts_or_now():
    after_2020 = Constraint("currentTime", "DATE_AFTER", value="2020-01-01T00:00:00Z")
    assert on(after_2020) is True
    flag = FlagDefinition("f", strategies=(Strategy("default", constraints=(after_2020,)),))
    assert not evaluate(flag, Context(current_time=datetime(2019, 1, 1, tzinfo=UTC))).enabled


def test_standard_fields_and_targeting_key():
    c = Constraint("userId", "IN", values=("u1",))
    assert on(c, targetingKey="u1") and on(c, userId="u1") and not on(c, userId="u2")
    assert on(Constraint("environment", "IN", values=("prod",)), environment="prod")


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"operator": "SEMVER_GT", "value": "2.3"}, "'2.3' is not a semantic version"),
        ({"operator": "SEMVER_EQ", "value": "v2.0.0"}, "'v2.0.0'"),
        ({"operator": "NUM_GT", "value": "ten"}, "'ten' is not a number"),
        ({"operator": "DATE_AFTER", "value": "yesterday"}, "'yesterday' is not an ISO 8601"),
        ({"operator": "DATE_AFTER", "value": "2024-01-01T00:00:00"}, "has no time zone"),
        ({"operator": "REGEX", "value": "(unclosed"}, "'(unclosed' is not a valid regular expression"),
        ({"operator": "REGEX", "value": "^(?=a)b$"}, "look-around"),
        ({"operator": "REGEX", "value": "^(a)\\1$"}, "back-references"),
        ({"operator": "IN_CIDR", "values": ("10.0.0.0/8", "10.300.0.0/16")}, "'10.300.0.0/16' is not an IP"),
        ({"operator": "LIKE", "values": ("x",)}, "unknown operator 'LIKE'"),
    ],
    ids=lambda v: v if isinstance(v, str) else v.get("operator"),
)
def test_bad_values_are_refused_naming_them(kwargs, named):
    with pytest.raises(InvalidTargeting) as raised:
        Constraint("field", **kwargs)
    assert named in str(raised.value)


def test_lenient_keeps_a_bad_constraint_as_never_matching():
    broken = Constraint.lenient("version", "SEMVER_EQ", value="v2.0.0", inverted=True)
    assert broken.broken and on(broken, properties={"version": "1.0.0"}) is False
    mixed = Constraint.lenient("ip", "IN_CIDR", values=("bad", "10.0.0.0/8"))
    assert not mixed.broken and on(mixed, properties={"ip": "10.0.0.1"})


def test_re2_syntax_is_translated():
    assert on(Constraint("u", "REGEX", value="^[[:alpha:]]+$"), properties={"u": "Abc"})
    assert not on(Constraint("u", "REGEX", value="^[[:alpha:]]+$"), properties={"u": "Ab1"})
    assert on(Constraint("u", "REGEX", value="^(?i)abc$"), properties={"u": "ABC"})
    assert on(Constraint("u", "REGEX", value="a(?i)b|C"), properties={"u": "c"})
    assert not on(Constraint("u", "REGEX", value="^\\d+$"), properties={"u": "١٢"})  # ASCII digits only


# --- Strategies, segments, variants, dependencies ----------------------------------------------------


def test_segment_constraints_apply_to_every_strategy_using_it():
    eu = Segment(1, "EU premium", (Constraint("region", "IN", values=("eu",)),))
    flag = FlagDefinition("f", strategies=(Strategy("default", segments=(eu,)),))
    assert evaluate(flag, Context.of({"region": "eu"})).enabled
    assert not evaluate(flag, Context.of({"region": "us"})).enabled
    missing = FlagDefinition("f", strategies=(Strategy("default", missing_segments=(404,)),))
    assert not evaluate(missing, Context()).enabled


def test_typed_variants_are_sticky_and_split():
    flag = FlagDefinition(
        "model",
        type="object",
        variants=(Variant("a", {"k": 1}, weight=50), Variant("b", {"k": 2}, weight=50)),
        strategies=(Strategy("default"),),
    )
    seen = {evaluate(flag, Context(user_id=f"u{i}")).variant_name for i in range(200)}
    assert seen == {"a", "b"}
    first = evaluate(flag, Context(user_id="u7"))
    assert first == evaluate(flag, Context(user_id="u7"))
    assert first.reason == "SPLIT" and first.value in ({"k": 1}, {"k": 2})


def test_variant_value_must_have_the_flags_type():
    with pytest.raises(InvalidTargeting, match="is not a number"):
        FlagDefinition("n", type="number", variants=(Variant("a", "1"),))


def test_variant_override_is_a_targeting_match():
    from flags.targeting import Override

    flag = FlagDefinition(
        "m",
        type="string",
        variants=(Variant("a", "A", overrides=(Override("userId", frozenset({"vip"})),)), Variant("b", "B")),
        strategies=(Strategy("default"),),
    )
    result = evaluate(flag, Context(user_id="vip"))
    assert (result.value, result.reason, result.variant_source) == ("A", "TARGETING_MATCH", "override")


def test_dependency_on_a_parent():
    parent = FlagDefinition("parent", enabled=False)
    child = FlagDefinition("child", dependencies=(Dependency("parent"),))
    flags = {"parent": parent, "child": child}
    result = evaluate(child, Context(), flags.get)
    assert (result.enabled, result.reason) == (False, "DEFAULT")
    flags["parent"] = FlagDefinition("parent")
    assert evaluate(child, Context(), flags.get).enabled


# --- Why is this user on? ----------------------------------------------------------------------------


def test_explanation_names_the_strategy_and_the_constraint():
    flag = FlagDefinition(
        "f",
        strategies=(
            Strategy("default", constraints=(Constraint("plan", "IN", values=("premium",)),)),
            Strategy.user_with_id({"u1"}),
        ),
    )
    on_result = evaluate(flag, Context(user_id="u1"), explain=True)
    assert on_result.enabled and on_result.explanation is not None
    assert on_result.explanation.strategy_index == 1 and on_result.explanation.strategy_name == "userWithId"
    assert "plan IN [premium] does not match" in on_result.explanation.steps[0]
    off_result = evaluate(flag, Context(user_id="u2"), explain=True)
    assert off_result.explanation is not None
    assert off_result.explanation.constraint == "plan IN [premium]"
    assert off_result.explanation.as_dict()["summary"] == "off: no strategy matched"
    # explaining does not change the answer
    assert evaluate(flag, Context(user_id="u1")).enabled == on_result.enabled
