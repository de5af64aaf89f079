"""The in-process snapshot of every flag that evaluation reads: no query and no cache read per call.

It holds every flag compiled once per change into the engine's ``FlagDefinition`` for each
environment; readers pick an environment's dict (OFREP the token's, the control plane's own helpers
production's). The compiled definitions hold closures, which cannot be pickled: the copy kept on disk
is the document they were compiled from, compiled again when read back.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from controlplane.localcopy import LocalCopy
from controlplane.models import DEFAULT_FLAGS_ENVIRONMENT
from flags.definitions import compile_flag, compile_segments, simple_of
from flags.evaluation import CompiledFlag, compiled
from flags.targeting import FlagDefinition, Lookup


@dataclass(frozen=True, slots=True)
class FlagInfo:
    """What pages and waffle's instances show of a flag besides its rule."""

    name: str
    type: str
    description: str
    owner: str


class Snapshot:
    __slots__ = ("content", "digest", "environments", "info", "lookups")

    def __init__(self, content: dict[str, Any], digest: str) -> None:
        self.content, self.digest = content, digest
        segments = compile_segments(content["segments"])
        self.environments: dict[str, dict[str, CompiledFlag]] = {}
        self.lookups: dict[str, Lookup] = {}
        for env in content["environment_names"]:
            flags: dict[str, CompiledFlag] = {}
            for flag in content["flags"]:
                state = flag["environments"].get(env)
                simple = simple_of(state, flag["name"]) if state is not None else None
                flags[flag["name"]] = compiled(compile_flag(flag, state, segments), simple, flag["owner"])
            self.environments[env] = flags
            self.lookups[env] = _lookup(flags)
        self.info = {f["name"]: FlagInfo(f["name"], f["type"], f["description"], f["owner"]) for f in content["flags"]}

    def __reduce__(self) -> tuple[Any, ...]:
        return (Snapshot, (self.content, self.digest))

    def flags_in(self, environment: str | None = None) -> dict[str, CompiledFlag]:
        """The flags as ``environment`` (production when None) evaluates them; an environment made
        since the last change has every flag off."""
        name = environment or DEFAULT_FLAGS_ENVIRONMENT
        found = self.environments.get(name)
        if found is None:
            found = {n: CompiledFlag(n, False, 0, frozenset()) for n in self.info}
        return found

    def lookup(self, environment: str | None = None) -> Lookup:
        """Parents of a flag (dependencies) in the same environment."""
        return self.lookups.get(environment or DEFAULT_FLAGS_ENVIRONMENT) or _lookup(self.flags_in(environment))

    def production(self) -> dict[str, CompiledFlag]:
        return self.flags_in(DEFAULT_FLAGS_ENVIRONMENT)

    @property
    def flags(self) -> dict[str, CompiledFlag]:
        """Production's flags: what the control plane obeys and what callers naming no environment read."""
        return self.production()


def _lookup(flags: dict[str, CompiledFlag]) -> Lookup:
    def lookup(name: str) -> FlagDefinition | None:
        found = flags.get(name)
        return found.engine() if found is not None else None

    return lookup


def _load() -> Snapshot:
    from controlplane.models import Environment
    from flags.definitions import read_document

    content = read_document()
    content["environment_names"] = list(Environment.objects.order_by("name").values_list("name", flat=True))
    encoded = json.dumps(content, sort_keys=True, separators=(",", ":")).encode()
    return Snapshot(content, hashlib.sha256(encoded).hexdigest()[:20])


snapshot: LocalCopy[Snapshot] = LocalCopy("flags", _load)


def current() -> Snapshot:
    return snapshot.get()
