"""Unleash's client specification, evaluated in process by flags.targeting.

Each file's ``state`` is read with ``from_unleash`` and every case of ``tests`` (isEnabled) and
``variantTests`` (getVariant) is compared with the expected result. Files 05 (random rollout) and
19-20 (Unleash's delta streaming) are not deterministic evaluation cases and are not listed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from flags.targeting import Context, evaluate, from_unleash, unleash_variant

# Read where the project's checkout keeps it (../shared beside the project's root), never copied in;
# UNLEASH_SPEC_DIR names another place (a clone of the project elsewhere).
SPEC = Path(
    os.environ.get("UNLEASH_SPEC_DIR")
    or Path(__file__).resolve().parents[2].parent / "shared" / "unleash-client-specification"
)
if not (SPEC / "index.json").is_file():
    pytest.skip(
        f"Unleash's client specification is not at {SPEC} (set UNLEASH_SPEC_DIR to its folder)",
        allow_module_level=True,
    )
FILES = [
    "01-simple-examples.json",
    "02-user-with-id-strategy.json",
    "03-gradual-rollout-user-id-strategy.json",
    "04-gradual-rollout-session-id-strategy.json",
    "06-remote-address-strategy.json",
    "07-multiple-strategies.json",
    "08-variants.json",
    "09-strategy-constraints.json",
    "10-flexible-rollout-strategy.json",
    "11-strategy-constraints-edge-cases.json",
    "12-custom-stickiness.json",
    "13-constraint-operators.json",
    "14-constraint-semver-operators.json",
    "15-global-constraints.json",
    "16-strategy-variants.json",
    "17-dependent-features.json",
    "18-utf8-flag-names.json",
    "21-regex-constraint-operators.json",
    "22-cidr-constraint-operators.json",
]


def _cases() -> list[Any]:
    params = []
    for name in FILES:
        data = json.loads((SPEC / name).read_text(encoding="utf-8"))
        stem = name.removesuffix(".json")
        for kind in ("tests", "variantTests"):
            for index in range(len(data.get(kind, []))):
                params.append(pytest.param(name, kind, index, id=f"{stem}-{kind}-{index}"))
    return params


_STATES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}


def _load(name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    if name not in _STATES:
        data = json.loads((SPEC / name).read_text(encoding="utf-8"))
        _STATES[name] = (data, from_unleash(data["state"]))
    return _STATES[name]


@pytest.mark.parametrize(("name", "kind", "index"), _cases())
def test_case(name: str, kind: str, index: int) -> None:
    data, flags = _load(name)
    case = data[kind][index]
    flag = flags.get(case["toggleName"])
    ctx = Context.of(case["context"])
    if kind == "tests":
        enabled = flag is not None and evaluate(flag, ctx, flags.get).enabled
        assert enabled is case["expectedResult"], case["description"]
    else:
        if flag is None:
            got = {"name": "disabled", "enabled": False, "feature_enabled": False}
        else:
            got = unleash_variant(evaluate(flag, ctx, flags.get))
        assert got == case["expectedResult"], case["description"]


def test_every_listed_file_has_cases() -> None:
    # Guards against a path mistake turning the parametrisation into nothing.
    assert len(_cases()) == 271
