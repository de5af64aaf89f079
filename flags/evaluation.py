"""The one evaluation rule, used by OFREP, the APIs, the pages and waffle's own entry points.

For a flag and a targeting key ``k`` (the product's user id):

- not enabled: off, DISABLED;
- enabled and ``k`` in the targeting keys: on, TARGETING_MATCH;
- rollout 0 or 100 and no targeting keys: off or on for everyone, STATIC;
- otherwise bucket = murmur3_32(seed 0, unsigned) of ``"{name}:{k}"`` % 100 + 1, on when
  ``rollout > 0 and bucket <= rollout``: SPLIT. Unleash's gradual rollout with the flag name as
  group id, so a user lands in the same bucket here as in Unleash's SDKs;
- a flag whose answer depends on the key, asked without one: TARGETING_KEY_MISSING, except that a
  100 % rollout is on for everyone (STATIC).

That is a flag state whose strategies are the simple ones (named users, then one rollout), evaluated
here exactly as before (reasons included) and fast. A state with other strategies, constraints,
segments or variants (``custom``) is evaluated by the engine (flags/targeting.py); an answer it drew
by chance (no targeting key for a partial rollout) is TARGETING_KEY_MISSING here too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import mmh3

from flags import targeting

DISABLED, TARGETING_MATCH, STATIC, SPLIT = "DISABLED", "TARGETING_MATCH", "STATIC", "SPLIT"


class TargetingKeyMissing(Exception):
    """The flag's answer depends on a targeting key and none was given."""


@dataclass(frozen=True, slots=True)
class CompiledFlag:
    """A flag in one environment reduced to what evaluation needs, built once per snapshot.

    ``definition`` is the engine's form (always set by the snapshot); ``custom`` says the state is more
    than today's one line, and then ``rollout_percent`` (0) and ``targeting_keys`` (empty) are unused.
    """

    name: str
    enabled: bool
    rollout_percent: int
    targeting_keys: frozenset[str]
    description: str = ""
    owner: str = ""
    definition: targeting.FlagDefinition | None = None
    custom: bool = False
    type: str = "boolean"

    def engine(self) -> targeting.FlagDefinition:
        if self.definition is not None:
            return self.definition
        return targeting.FlagDefinition.simple(
            self.name, enabled=self.enabled, rollout_percent=self.rollout_percent, targeting_keys=self.targeting_keys
        )

    @property
    def needs_key(self) -> bool:
        """Whether the answer can differ between users (so asking without a key is an error)."""
        if not self.enabled:
            return False
        if self.targeting_keys:
            return self.rollout_percent < 100
        return 0 < self.rollout_percent < 100


def bucket(flag_name: str, key: str) -> int:
    """1..100, Unleash's normalised value for group id ``flag_name`` and user ``key``."""
    # Bytes, not str: mmh3 encodes a str itself and crashes the process on a lone surrogate; encoding
    # here raises UnicodeEncodeError instead (the APIs refuse such text before it gets this far).
    return mmh3.hash(f"{flag_name}:{key}".encode(), 0, signed=False) % 100 + 1


def evaluate(flag: CompiledFlag, key: str | None, lookup: targeting.Lookup | None = None) -> tuple[bool, str]:
    """(on, reason) for ``key``; raises TargetingKeyMissing as described above. ``lookup`` finds a
    custom flag's parents (dependencies) in the same environment."""
    if flag.custom:
        result = targeting.evaluate(flag.engine(), targeting.Context(user_id=key), lookup or _no_parent)
        if result.by_chance:
            raise TargetingKeyMissing(flag.name)
        return result.enabled, result.reason
    if not flag.enabled:
        return False, DISABLED
    if key is not None and key in flag.targeting_keys:
        return True, TARGETING_MATCH
    rollout = flag.rollout_percent
    if not flag.targeting_keys and (rollout == 0 or rollout == 100):
        return rollout == 100, STATIC
    if key is None:
        if rollout == 100:
            return True, STATIC
        raise TargetingKeyMissing(flag.name)
    return rollout > 0 and bucket(flag.name, key) <= rollout, SPLIT


def variant(value: bool) -> str:
    return "on" if value else "off"


def _no_parent(_: str) -> targeting.FlagDefinition | None:
    return None


def answer(
    flag: CompiledFlag, ctx: targeting.Context, lookup: targeting.Lookup | None = None, *, explain: bool = False
) -> targeting.Result:
    """The engine's full answer (typed value, variant, reason, explanation when asked)."""
    return targeting.evaluate(flag.engine(), ctx, lookup or _no_parent, explain=explain)


def compiled(definition: targeting.FlagDefinition, simple: dict[str, Any] | None, owner: str = "") -> CompiledFlag:
    """The snapshot's entry for a flag in one environment; ``simple`` is its one line, if it has one."""
    if simple is not None and definition.type == "boolean" and not definition.dependencies:
        return CompiledFlag(
            name=definition.name,
            enabled=definition.enabled,
            rollout_percent=simple["rollout_percent"],
            targeting_keys=frozenset(simple["targeting_keys"]),
            description=definition.description,
            owner=owner,
            definition=definition,
            type=definition.type,
        )
    return CompiledFlag(
        name=definition.name,
        enabled=definition.enabled,
        rollout_percent=0,
        targeting_keys=frozenset(),
        description=definition.description,
        owner=owner,
        definition=definition,
        custom=True,
        type=definition.type,
    )


def on_for(flag: CompiledFlag) -> str:
    """One line saying who the flag is on for."""
    if not flag.enabled:
        return "off for everyone (disabled)"
    if flag.custom:
        count = len(flag.engine().strategies)
        if not count:
            return "on for everyone (no strategies)"
        return f"on where any of {count} strateg{'y' if count == 1 else 'ies'} matches"
    named = len(flag.targeting_keys)
    named_text = f"{named} named user{'s' if named != 1 else ''}"
    if flag.rollout_percent == 100:
        return "on for everyone"
    if flag.rollout_percent == 0:
        return f"on for {named_text} only" if named else "off for everyone (0 % rollout)"
    share = f"{flag.rollout_percent} % of users"
    return f"on for {share} and {named_text}" if named else f"on for {share}"
