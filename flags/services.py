"""Every write to flags: validated, atomic, audited, and published to every process after commit."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction

from controlplane.audit import Actor, audit_record, snapshot
from controlplane.errors import InvalidInput, NotFound
from flags.models import Flag
from flags.snapshot import snapshot as flags_snapshot

# The rules of a flag's fields, declared once: the services check them, the admin form and the API
# schemas name them, and the messages below are what every caller shows when one is broken.
MAX_NAME_LENGTH = 100
NAME_PATTERN = re.compile(rf"[a-z0-9_.-]{{1,{MAX_NAME_LENGTH}}}")  # used with fullmatch
NAME_RULE = f"1 to {MAX_NAME_LENGTH} of a-z, 0-9, '_', '.', '-'"
MIN_ROLLOUT_PERCENT = 0
MAX_ROLLOUT_PERCENT = 100
ROLLOUT_PERCENT_RULE = f"must be a whole number from {MIN_ROLLOUT_PERCENT} to {MAX_ROLLOUT_PERCENT}"
MAX_TARGETING_KEY = 256  # characters of one key (a user id), here and in OFREP's targetingKey
MAX_TARGETING_KEYS = 10_000
MAX_DESCRIPTION_LENGTH = 2000
MAX_OWNER_LENGTH = 100
FIELDS = ("name", "enabled", "rollout_percent", "targeting_keys", "description", "owner")
AUDIT_FIELDS = list(FIELDS)
DEFAULTS: dict[str, Any] = {
    "enabled": False,
    "rollout_percent": 0,
    "targeting_keys": [],
    "description": "",
    "owner": "",
}


class InvalidFlagDefinition(InvalidInput):
    """A flag definition or change that cannot be applied; names the flag (if known) and the field."""

    def __init__(self, field: str, message: str, *, flag: str | None = None) -> None:
        super().__init__(field, message)
        self.flag = flag

    def __str__(self) -> str:
        where = f"flag {self.flag!r}: " if self.flag else ""
        return f"{where}{super().__str__()}"


class FlagNotFound(NotFound):
    def __init__(self, name: str) -> None:
        super().__init__(f"no flag named {name!r}")
        self.name = name


def clean_name(value: Any, *, flag: str | None = None) -> str:
    if not isinstance(value, str) or not NAME_PATTERN.fullmatch(value):
        raise InvalidFlagDefinition("name", NAME_RULE, flag=flag)
    return value


def clean_rollout_percent(value: Any, *, flag: str | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not MIN_ROLLOUT_PERCENT <= value <= MAX_ROLLOUT_PERCENT:
        raise InvalidFlagDefinition("rollout_percent", ROLLOUT_PERCENT_RULE, flag=flag)
    return value


def clean_fields(data: Any, *, allowed: tuple[str, ...] = FIELDS, flag: str | None = None) -> dict[str, Any]:
    """Check types and ranges of the given fields; unknown fields are an error. Returns clean values."""
    if not isinstance(data, dict):
        raise InvalidFlagDefinition("body", "must be a JSON object", flag=flag)
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise InvalidFlagDefinition(unknown[0], f"unknown field; known fields: {', '.join(allowed)}", flag=flag)
    clean: dict[str, Any] = {}
    if "name" in data:
        clean["name"] = clean_name(data["name"], flag=flag)
    if "enabled" in data:
        if not isinstance(data["enabled"], bool):
            raise InvalidFlagDefinition("enabled", "must be true or false", flag=flag)
        clean["enabled"] = data["enabled"]
    if "rollout_percent" in data:
        clean["rollout_percent"] = clean_rollout_percent(data["rollout_percent"], flag=flag)
    if "targeting_keys" in data:
        keys = data["targeting_keys"]
        if not isinstance(keys, list):
            raise InvalidFlagDefinition("targeting_keys", "must be a list of strings", flag=flag)
        for index, key in enumerate(keys):  # the path names the key at fault
            if not isinstance(key, str):
                raise InvalidFlagDefinition(f"targeting_keys.{index}", "must be a string", flag=flag)
            if not key or len(key) > MAX_TARGETING_KEY:
                raise InvalidFlagDefinition(
                    f"targeting_keys.{index}", f"each key must have 1 to {MAX_TARGETING_KEY} characters", flag=flag
                )
        if len(keys) > MAX_TARGETING_KEYS:
            raise InvalidFlagDefinition("targeting_keys", f"at most {MAX_TARGETING_KEYS} keys", flag=flag)
        clean["targeting_keys"] = sorted(set(keys))
    for name, limit in (("description", MAX_DESCRIPTION_LENGTH), ("owner", MAX_OWNER_LENGTH)):
        if name in data:
            if not isinstance(data[name], str) or len(data[name]) > limit:
                raise InvalidFlagDefinition(name, f"must be text of at most {limit} characters", flag=flag)
            clean[name] = data[name]
    return clean


def _state(flag: Flag) -> dict[str, Any]:
    return snapshot(flag, AUDIT_FIELDS)


def flag_create(*, data: object, actor: Actor) -> Flag:
    """Create a flag; ``name`` is required, other fields default to off. ``data`` is checked whole: any
    JSON value a caller was sent, a non-object refused as the body."""
    clean = clean_fields(data, flag=data.get("name") if isinstance(data, dict) else None)
    if "name" not in clean:
        raise InvalidFlagDefinition("name", "is required")
    with transaction.atomic():
        if Flag.objects.filter(name=clean["name"]).exists():
            raise InvalidFlagDefinition("name", "a flag with this name exists", flag=clean["name"])
        flag = Flag.objects.create(**{**DEFAULTS, **clean})
        audit_record(actor=actor, action="flag.create", obj=flag, after=_state(flag))
        flags_snapshot.bump()
    return flag


def _locked(name: str) -> Flag:
    flag = Flag.objects.select_for_update().filter(name=name).first()
    if flag is None:
        raise FlagNotFound(name)
    return flag


@dataclass(frozen=True, slots=True)
class FlagChange:
    """What a change did: the flag as saved, and whether it differed from what was there."""

    flag: Flag
    changed: bool


def _apply(flag: Flag, clean: dict[str, Any], actor: Actor, action: str) -> FlagChange:
    """Save validated changes to a locked flag; audit and publish only if something changed."""
    before = _state(flag)
    for key, value in clean.items():
        setattr(flag, key, value)
    after = _state(flag)
    if after != before:
        flag.save()
        audit_record(actor=actor, action=action, obj=flag, before=before, after=after)
        flags_snapshot.bump()
    return FlagChange(flag, after != before)


def flag_update(*, name: str, changes: dict[str, Any], actor: Actor, action: str = "flag.update") -> Flag:
    """Change some fields of a flag (not its name); records before and after."""
    return _update(name, changes, actor, action).flag


def _update(name: str, changes: dict[str, Any], actor: Actor, action: str, *, durable: bool = False) -> FlagChange:
    clean = clean_fields(changes, allowed=FIELDS[1:], flag=name)
    with transaction.atomic(durable=durable):
        return _apply(_locked(name), clean, actor, action)


def flag_change(*, name: str, changes: dict[str, Any] | None, actor: Actor) -> FlagChange:
    """The toggle: set the given fields, or with none flip ``enabled``.

    Setting is idempotent (a retry of ``{"enabled": true}`` leaves the flag on and changes nothing);
    flipping is not, so callers that may retry send the state they want.
    """
    if changes:
        return _update(name, changes, actor, "flag.toggle", durable=True)
    with transaction.atomic(durable=True):
        flag = _locked(name)
        return _apply(flag, {"enabled": not flag.enabled}, actor, "flag.toggle")


def flag_toggle(*, name: str, changes: dict[str, Any] | None, actor: Actor) -> Flag:
    """``flag_change`` for callers that only need the flag as saved (the page)."""
    return flag_change(name=name, changes=changes, actor=actor).flag


@dataclass
class PlannedChange:
    name: str
    kind: str  # "create" | "update" | "unchanged"
    changes: dict[str, tuple[Any, Any]] = field(default_factory=dict)

    def describe(self) -> str:
        if self.kind == "unchanged":
            return f"  {self.name}: unchanged"
        parts = ", ".join(f"{key}: {old!r} -> {new!r}" for key, (old, new) in self.changes.items())
        return f"{'+' if self.kind == 'create' else '~'} {self.name}: {parts}"


def parse_flag_file(document: Any) -> list[dict[str, Any]]:
    """Validate a whole ``{"flags": [...]}`` document before anything is applied."""
    if not isinstance(document, dict) or set(document) != {"flags"} or not isinstance(document["flags"], list):
        raise InvalidFlagDefinition("flags", 'the file must be {"flags": [ ... ]} and nothing else')
    cleaned: list[dict[str, Any]] = []
    seen: set[str] = set()
    for index, entry in enumerate(document["flags"]):
        label = entry.get("name") if isinstance(entry, dict) and isinstance(entry.get("name"), str) else f"#{index + 1}"
        if not isinstance(entry, dict) or "name" not in entry:
            raise InvalidFlagDefinition("name", "is required", flag=label)
        clean = clean_fields(entry, flag=label)
        if clean["name"] in seen:
            raise InvalidFlagDefinition("name", "appears twice in the file", flag=clean["name"])
        seen.add(clean["name"])
        cleaned.append(clean)
    return cleaned


def flags_import(*, document: Any, actor: Actor, dry_run: bool = False) -> list[PlannedChange]:
    """Apply a flag file all or nothing: creates missing flags, updates the fields it names.

    Flags not in the file are left as they are. Returns what changed (or would, with dry_run).
    """
    definitions = parse_flag_file(document)
    plan: list[PlannedChange] = []
    with transaction.atomic(durable=True):
        existing = {
            f.name: f for f in Flag.objects.select_for_update().filter(name__in=[d["name"] for d in definitions])
        }
        for definition in definitions:
            flag = existing.get(definition["name"])
            if flag is None:
                values = {**DEFAULTS, **definition}
                plan.append(
                    PlannedChange(
                        definition["name"], "create", {k: (None, v) for k, v in values.items() if k != "name"}
                    )
                )
                continue
            current = _state(flag)
            diff = {k: (current[k], v) for k, v in definition.items() if k != "name" and current[k] != v}
            plan.append(PlannedChange(flag.name, "update" if diff else "unchanged", diff))
        if dry_run:
            return plan
        for change in plan:
            if change.kind == "create":
                flag_create(
                    data={"name": change.name, **{k: new for k, (_, new) in change.changes.items()}}, actor=actor
                )
            elif change.kind == "update":
                # Already validated by parse_flag_file and locked above.
                values = {k: new for k, (_, new) in change.changes.items()}
                _apply(existing[change.name], values, actor, "flag.import")
    return plan


def flags_export() -> dict[str, Any]:
    return {"flags": [_state(flag) for flag in Flag.objects.order_by("name")]}


def flag_delete(*, name: str, actor: Actor) -> None:
    with transaction.atomic():
        flag = _locked(name)
        audit_record(actor=actor, action="flag.delete", obj=flag, before=_state(flag))
        flag.delete()
        flags_snapshot.bump()
