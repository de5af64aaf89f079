"""Every write to flags: validated, atomic, audited, and published to every process after commit."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction

from controlplane.audit import Actor, audit_record
from controlplane.errors import InvalidInput, NotFound
from controlplane.models import DEFAULT_FLAGS_ENVIRONMENT, Environment
from flags import definitions as docs
from flags.models import Constraint, Dependency, Flag, FlagState, FlagType, Segment, Strategy, Variant
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
STATE_FIELDS = ("enabled", "rollout_percent", "targeting_keys")  # today's one line, of one environment
# The flag's own fields (every environment), beside today's one line; the import format adds these.
FLAG_FIELDS = ("type", "default_value", "dependencies")
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


class EnvironmentNotFound(NotFound):
    def __init__(self, name: str) -> None:
        super().__init__(f"no environment named {name!r}")
        self.name = name


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


def _environment(name: str | None) -> Environment:
    """The named environment; production when None, made if missing (every flag has a production state,
    and a flushed database, as transactional tests leave it, has no seeded rows)."""
    if name is None or name == DEFAULT_FLAGS_ENVIRONMENT:
        return Environment.objects.ensure(DEFAULT_FLAGS_ENVIRONMENT, production=True)
    found = Environment.objects.filter(name=name).first()
    if found is None:
        raise EnvironmentNotFound(name)
    return found


def _fresh(name: str) -> Flag:
    return docs.flags_queryset().get(name=name)


def _audit_state(flag: Flag, environment: str) -> dict[str, Any]:
    """What an event records of a flag in one environment: its fields and today's one line, or its
    strategies and variants when it holds more than that."""
    doc = docs.flag_doc(flag)
    out: dict[str, Any] = {key: doc[key] for key in ("name", "description", "owner")}
    if doc["type"] != FlagType.BOOLEAN or doc["default_value"] is not None:
        out.update(type=doc["type"], default_value=doc["default_value"])
    if doc["dependencies"]:
        out["dependencies"] = doc["dependencies"]
    if environment != DEFAULT_FLAGS_ENVIRONMENT:
        out["environment"] = environment
    state = doc["environments"].get(environment)
    if state is None:
        return out
    out.update(docs.export_state(state, flag.name))
    return out


def _state(flag: Flag, environment: str = DEFAULT_FLAGS_ENVIRONMENT) -> dict[str, Any]:
    return _audit_state(_fresh(flag.name), environment)


def write_state(state: FlagState, doc: dict[str, Any]) -> None:
    """Replace a state's strategies and variants with those of a full, checked state document."""
    state.enabled = doc["enabled"]
    state.save()
    state.strategies.all().delete()
    state.variants.all().delete()
    segments = {
        s.name: s for s in Segment.objects.filter(name__in={n for s in doc["strategies"] for n in s["segments"]})
    }
    for position, sdoc in enumerate(doc["strategies"]):
        strategy = Strategy.objects.create(
            state=state,
            position=position,
            kind=sdoc["kind"],
            title=sdoc["title"],
            rollout=sdoc["rollout"],
            stickiness=sdoc["stickiness"],
            group_id=sdoc["group_id"],
            user_ids=sdoc["user_ids"],
            parameters=sdoc["parameters"],
            missing_segments=sdoc["missing_segments"],
        )
        strategy.segments.set([segments[n] for n in sdoc["segments"] if n in segments])
        _write_constraints(sdoc["constraints"], strategy=strategy)
        _write_variants(sdoc["variants"], strategy=strategy)
    _write_variants(doc["variants"], state=state)


def _write_constraints(items: list[dict[str, Any]], **owner: Any) -> None:
    Constraint.objects.bulk_create([Constraint(position=i, **c, **owner) for i, c in enumerate(items)])


def _write_variants(items: list[dict[str, Any]], **owner: Any) -> None:
    Variant.objects.bulk_create([Variant(position=i, **v, **owner) for i, v in enumerate(items)])


def _write_dependencies(flag: Flag, items: list[dict[str, Any]]) -> None:
    flag.dependencies.all().delete()
    Dependency.objects.bulk_create(
        [Dependency(flag=flag, parent=d["feature"], enabled=d["enabled"], variants=d["variants"]) for d in items]
    )


def _check(flag_doc: dict[str, Any], *, flag: str) -> None:
    """The whole flag compiles in every environment: values of its type, segments that exist."""
    segment_docs = [docs.segment_doc(s) for s in Segment.objects.prefetch_related("constraints")]
    try:
        docs.check_flag(flag_doc, docs.compile_segments(segment_docs))
    except docs.DocumentError as exc:
        raise InvalidFlagDefinition(exc.field, exc.message, flag=flag) from None


def _document_error(exc: docs.DocumentError, flag: str | None) -> InvalidFlagDefinition:
    return InvalidFlagDefinition(exc.field, exc.message, flag=flag)


def clean_flag_fields(data: dict[str, Any], *, flag: str | None) -> dict[str, Any]:
    """``type``, ``default_value`` and ``dependencies``, checked (values against the type later)."""
    clean: dict[str, Any] = {}
    if "type" in data:
        if data["type"] not in FlagType.values:
            raise InvalidFlagDefinition("type", f"must be one of {', '.join(FlagType.values)}", flag=flag)
        clean["type"] = data["type"]
    if "default_value" in data:
        clean["default_value"] = data["default_value"]
    if "dependencies" in data:
        try:
            clean["dependencies"] = docs.clean_dependencies(data["dependencies"], "dependencies")
        except docs.DocumentError as exc:
            raise _document_error(exc, flag) from None
    return clean


def flag_create(*, data: object, actor: Actor, environment: str | None = None) -> Flag:
    """Create a flag; ``name`` is required, other fields default to off. ``data`` is checked whole: any
    JSON value a caller was sent, a non-object refused as the body. The flag gets a state in every
    environment: today's one line (``enabled``, ``rollout_percent``, ``targeting_keys``) is that of
    ``environment`` (production when None); the others get the same strategies, disabled."""
    name = data.get("name") if isinstance(data, dict) else None
    extra = {k: v for k, v in data.items() if k in FLAG_FIELDS} if isinstance(data, dict) else {}
    clean = clean_fields(
        {k: v for k, v in data.items() if k not in FLAG_FIELDS} if isinstance(data, dict) else data, flag=name
    )
    if "name" not in clean:
        raise InvalidFlagDefinition("name", "is required")
    flag_fields = clean_flag_fields(extra, flag=clean["name"])
    values = {**DEFAULTS, **clean}
    with transaction.atomic():
        env = _environment(environment)
        if Flag.objects.filter(name=clean["name"]).exists():
            raise InvalidFlagDefinition("name", "a flag with this name exists", flag=clean["name"])
        flag = Flag.objects.create(
            name=values["name"],
            description=values["description"],
            owner=values["owner"],
            type=flag_fields.get("type", FlagType.BOOLEAN),
            default_value=flag_fields.get("default_value"),
        )
        _write_dependencies(flag, flag_fields.get("dependencies", []))
        state = docs.simple_state(values["enabled"], values["rollout_percent"], values["targeting_keys"])
        for each in Environment.objects.all():
            row = FlagState.objects.create(flag=flag, environment=each)
            write_state(row, state if each.pk == env.pk else {**state, "enabled": False})
        flag_doc = docs.flag_doc(_fresh(flag.name))
        _check(flag_doc, flag=flag.name)
        audit_record(actor=actor, action="flag.create", obj=flag, after=_state(flag, env.name))
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


def _state_row(flag: Flag, env: Environment) -> FlagState:
    row = FlagState.objects.select_for_update().filter(flag=flag, environment=env).first()
    if row is None:  # an environment made after the flag
        row = FlagState.objects.create(flag=flag, environment=env)
    return row


def _apply(flag: Flag, clean: dict[str, Any], actor: Actor, action: str, environment: str | None = None) -> FlagChange:
    """Save validated changes to a locked flag in one environment; audit and publish only if
    something changed. Today's rollout and targeting keys can only be set on a state that holds
    today's strategies (or none): one with more is edited as strategies."""
    env = _environment(environment)
    before = _state(flag, env.name)
    for key in ("description", "owner"):
        if key in clean:
            setattr(flag, key, clean[key])
    flag.save()
    row = _state_row(flag, env)
    state = docs.state_doc(row)
    if "rollout_percent" in clean or "targeting_keys" in clean:
        simple = (
            docs.simple_of(state, flag.name) if state["strategies"] else {"rollout_percent": 0, "targeting_keys": []}
        )
        if simple is None:
            field = "rollout_percent" if "rollout_percent" in clean else "targeting_keys"
            raise InvalidFlagDefinition(
                field,
                f"the {env.name} state has strategies beyond a rollout and named users; edit its strategies",
                flag=flag.name,
            )
        state = docs.simple_state(
            clean.get("enabled", row.enabled),
            clean.get("rollout_percent", simple["rollout_percent"]),
            clean.get("targeting_keys", simple["targeting_keys"]),
        )
        write_state(row, state)
    elif "enabled" in clean and clean["enabled"] != row.enabled:
        row.enabled = clean["enabled"]
        row.save()
    after = _state(flag, env.name)
    if after != before:
        audit_record(actor=actor, action=action, obj=flag, before=before, after=after)
        flags_snapshot.bump()
    return FlagChange(flag, after != before)


def flag_update(
    *, name: str, changes: dict[str, Any], actor: Actor, action: str = "flag.update", environment: str | None = None
) -> Flag:
    """Change some fields of a flag (not its name) in ``environment`` (production when None); records
    before and after."""
    return _update(name, changes, actor, action, environment=environment).flag


def _update(
    name: str,
    changes: dict[str, Any],
    actor: Actor,
    action: str,
    *,
    durable: bool = False,
    environment: str | None = None,
) -> FlagChange:
    clean = clean_fields(changes, allowed=FIELDS[1:], flag=name)
    with transaction.atomic(durable=durable):
        return _apply(_locked(name), clean, actor, action, environment)


def flag_change(
    *, name: str, changes: dict[str, Any] | None, actor: Actor, environment: str | None = None
) -> FlagChange:
    """The toggle: set the given fields, or with none flip ``enabled``, in ``environment``
    (production when None).

    Setting is idempotent (a retry of ``{"enabled": true}`` leaves the flag on and changes nothing);
    flipping is not, so callers that may retry send the state they want.
    """
    if changes:
        return _update(name, changes, actor, "flag.toggle", durable=True, environment=environment)
    with transaction.atomic(durable=True):
        flag = _locked(name)
        row = _state_row(flag, _environment(environment))
        return _apply(flag, {"enabled": not row.enabled}, actor, "flag.toggle", environment)


def flag_toggle(*, name: str, changes: dict[str, Any] | None, actor: Actor, environment: str | None = None) -> Flag:
    """``flag_change`` for callers that only need the flag as saved (the page)."""
    return flag_change(name=name, changes=changes, actor=actor, environment=environment).flag


def flag_state_set(
    *, name: str, environment: str, state: Any, actor: Actor, action: str = "flag.state.update"
) -> FlagChange:
    """Replace a flag's state in one environment (enabled, strategies, variants), given in either
    form of the document (flags/definitions.py). Every constraint is checked against its operator and
    every variant value against the flag's type, the error naming the part at fault."""
    try:
        doc = docs.clean_state(state, "state")
    except docs.DocumentError as exc:
        raise _document_error(exc, name) from None
    with transaction.atomic():
        flag = _locked(name)
        env = _environment(environment)
        before = _state(flag, env.name)
        write_state(_state_row(flag, env), doc)
        _check(docs.flag_doc(_fresh(name)), flag=name)
        after = _state(flag, env.name)
        if after != before:
            audit_record(actor=actor, action=action, obj=flag, before=before, after=after)
            flags_snapshot.bump()
    return FlagChange(flag, after != before)


def flag_state_saved(*, state: FlagState, before: dict[str, Any] | None, actor: Actor) -> None:
    """Record a state the admin's forms saved (inlines of strategies, constraints, variants): checked
    whole, audited with before and after, published after commit. The forms checked each part
    (constraint values against their operator, variant values against the type) before saving."""
    flag = state.flag
    _check(docs.flag_doc(_fresh(flag.name)), flag=flag.name)
    after = _state(flag, state.environment.name)
    if after != before:
        audit_record(actor=actor, action="flag.state.update", obj=flag, before=before, after=after)
        flags_snapshot.bump()


def state_before(state: FlagState) -> dict[str, Any]:
    """What ``flag_state_saved`` compares with: read before the forms save."""
    return _state(state.flag, state.environment.name)


def segment_saved(*, segment: Segment, before: dict[str, Any] | None, actor: Actor, action: str) -> None:
    """Record a segment the admin saved: every flag using it changes with it (one publication)."""
    after = docs.segment_doc(Segment.objects.prefetch_related("constraints").get(pk=segment.pk))
    if after != before:
        audit_record(actor=actor, action=action, obj=segment, before=before, after=after)
        flags_snapshot.bump()


def segment_deleted(*, segment: Segment, actor: Actor) -> None:
    with transaction.atomic():
        before = docs.segment_doc(segment)
        users = sorted({s.state.flag.name for s in segment.strategies.select_related("state__flag")})
        if users:
            raise InvalidFlagDefinition("segment", f"used by {', '.join(users)}; remove it from their strategies first")
        segment.delete()
        audit_record(actor=actor, action="segment.delete", obj=segment, before=before)
        flags_snapshot.bump()


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


ENTRY_FIELDS = (*FIELDS, "type", "default_value", "dependencies", "environments")
_FILE_RULE = (
    'the file must be {"flags": [ ... ]} (and optionally "segments": [ ... ]), or Unleash\'s {"features": [ ... ]}'
)


@dataclass
class ParsedFile:
    """A flag file checked whole: segments, and per flag its fields and full states by environment."""

    segments: list[dict[str, Any]]
    flags: list[dict[str, Any]]  # {"name", "fields": {...}, "states": {env: full}, "simple": {...}}


def parse_flag_file(document: Any, *, environment: str | None = None) -> ParsedFile:
    """Validate a whole document before anything is applied: ours (today's one-line entries, which
    mean production, or entries with ``environments``), or Unleash's features document, whose states
    go to ``environment`` (production when None)."""
    if docs.is_unleash(document):
        try:
            segments, flags = docs.from_unleash_document(document)
        except docs.DocumentError as exc:
            raise _document_error(exc, None) from None
        env = environment or DEFAULT_FLAGS_ENVIRONMENT
        entries = []
        for name, flag in flags.items():
            try:
                state = docs.clean_state(flag["state"], f"environments.{env}", strict=False)
            except docs.DocumentError as exc:
                raise _document_error(exc, name) from None
            entries.append(
                {
                    "name": name,
                    "fields": {k: flag[k] for k in ("type", "default_value", "description", "dependencies")},
                    "states": {env: state},
                    "simple": {},
                }
            )
        return ParsedFile(segments, entries)
    if (
        not isinstance(document, dict)
        or "flags" not in document
        or set(document) - {"flags", "segments"}
        or not isinstance(document["flags"], list)
        or not isinstance(document.get("segments", []), list)
    ):
        raise InvalidFlagDefinition("flags", _FILE_RULE)
    segments = []
    for index, seg in enumerate(document.get("segments", [])):
        try:
            segments.append(docs.clean_segment(seg, f"segments.{index}"))
        except docs.DocumentError as exc:
            raise _document_error(exc, None) from None
    cleaned: list[dict[str, Any]] = []
    seen: set[str] = set()
    for index, entry in enumerate(document["flags"]):
        label = entry.get("name") if isinstance(entry, dict) and isinstance(entry.get("name"), str) else f"#{index + 1}"
        if not isinstance(entry, dict) or "name" not in entry:
            raise InvalidFlagDefinition("name", "is required", flag=label)
        unknown = sorted(set(entry) - set(ENTRY_FIELDS))
        if unknown:
            raise InvalidFlagDefinition(
                unknown[0], f"unknown field; known fields: {', '.join(ENTRY_FIELDS)}", flag=label
            )
        clean = clean_fields({k: v for k, v in entry.items() if k in FIELDS}, flag=label)
        name = clean.pop("name")
        if name in seen:
            raise InvalidFlagDefinition("name", "appears twice in the file", flag=name)
        seen.add(name)
        fields: dict[str, Any] = {k: clean.pop(k) for k in ("description", "owner") if k in clean}
        fields.update(clean_flag_fields({k: v for k, v in entry.items() if k in FLAG_FIELDS}, flag=name))
        states: dict[str, dict[str, Any]] = {}
        raw_states = entry.get("environments", {})
        if not isinstance(raw_states, dict):
            raise InvalidFlagDefinition("environments", "must be an object: environment name -> state", flag=name)
        for env, raw in raw_states.items():
            try:
                states[env] = docs.clean_state(raw, f"environments.{env}")
            except docs.DocumentError as exc:
                raise _document_error(exc, name) from None
        if clean and DEFAULT_FLAGS_ENVIRONMENT in states:
            raise InvalidFlagDefinition(
                next(iter(clean)),
                f"give {DEFAULT_FLAGS_ENVIRONMENT} once: in environments or as today's fields",
                flag=name,
            )
        cleaned.append({"name": name, "fields": fields, "states": states, "simple": clean})
    return ParsedFile(segments, cleaned)


def _desired(current: dict[str, Any] | None, entry: dict[str, Any], envs: list[str]) -> dict[str, Any]:
    """The flag document after the entry is applied to ``current`` (None: a new flag)."""
    fields = entry["fields"]
    if current is None:
        current = {
            "name": entry["name"],
            "type": FlagType.BOOLEAN,
            "default_value": None,
            "description": "",
            "owner": "",
            "dependencies": [],
            "environments": {},
        }
        line = {**DEFAULTS, **entry["simple"]}
        base = docs.simple_state(line["enabled"], line["rollout_percent"], line["targeting_keys"])
        for env in envs:
            current["environments"][env] = base if env == DEFAULT_FLAGS_ENVIRONMENT else {**base, "enabled": False}
        simple_changes: dict[str, Any] = {}
    else:
        simple_changes = entry["simple"]
    desired = {**current, **fields, "environments": dict(current["environments"])}
    if simple_changes:
        state = desired["environments"].get(DEFAULT_FLAGS_ENVIRONMENT) or docs.simple_state(False, 0, [])
        if set(simple_changes) - {"enabled"}:
            simple: dict[str, Any] | None = (
                docs.simple_of(state, entry["name"])
                if state["strategies"]
                else {"rollout_percent": 0, "targeting_keys": []}
            )
            if simple is None:
                raise InvalidFlagDefinition(
                    next(iter(set(simple_changes) - {"enabled"})),
                    f"the {DEFAULT_FLAGS_ENVIRONMENT} state has strategies beyond a rollout and named users; "
                    "give it under environments",
                    flag=entry["name"],
                )
            state = docs.simple_state(
                simple_changes.get("enabled", state["enabled"]),
                simple_changes.get("rollout_percent", simple["rollout_percent"]),
                simple_changes.get("targeting_keys", simple["targeting_keys"]),
            )
        else:
            state = {**state, "enabled": simple_changes["enabled"]}
        desired["environments"][DEFAULT_FLAGS_ENVIRONMENT] = state
    for env, state in entry["states"].items():
        if env not in envs:
            raise InvalidFlagDefinition(f"environments.{env}", f"no environment named {env!r}", flag=entry["name"])
        desired["environments"][env] = state
    return desired


def _shown(doc: dict[str, Any]) -> dict[str, Any]:
    """A flag document as the plan and the audit show it: states in the export's form."""
    return {**doc, "environments": {env: docs.export_state(s, doc["name"]) for env, s in doc["environments"].items()}}


def _diff(before: dict[str, Any] | None, after: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    old = _flat(before) if before is not None else {}
    new = _flat(after)
    return {k: (old.get(k), v) for k, v in new.items() if k != "name" and old.get(k) != v}


def _flat(doc: dict[str, Any]) -> dict[str, Any]:
    """Production's one line as top-level fields (as today's files and plans read), other states by name."""
    shown = _shown(doc)
    out = {k: v for k, v in shown.items() if k != "environments"}
    for env, state in shown["environments"].items():
        if env == DEFAULT_FLAGS_ENVIRONMENT and "rollout_percent" in state:
            out.update(state)
        else:
            out[f"environments.{env}"] = state
    return out


def flags_import(
    *, document: Any, actor: Actor, dry_run: bool = False, environment: str | None = None
) -> list[PlannedChange]:
    """Apply a flag file all or nothing: creates missing flags and segments, updates what it names.

    Flags not in the file are left as they are, and so are the fields and environments an entry does
    not name. Returns what changed (or would, with dry_run).
    """
    parsed = parse_flag_file(document, environment=environment)
    plan: list[PlannedChange] = []
    with transaction.atomic(durable=True):
        _environment(None)
        envs = list(Environment.objects.values_list("name", flat=True))
        if environment is not None and environment not in envs:
            raise EnvironmentNotFound(environment)
        names = [e["name"] for e in parsed.flags]
        locked = list(Flag.objects.select_for_update().filter(name__in=names).values_list("pk", flat=True))
        existing = {f.name: f for f in docs.flags_queryset().filter(pk__in=locked)}
        segment_docs = {s.name: docs.segment_doc(s) for s in Segment.objects.prefetch_related("constraints")}
        segment_plan = []
        for seg in parsed.segments:
            old = segment_docs.get(seg["name"])
            if old != seg:
                segment_plan.append((old, seg))
            segment_docs[seg["name"]] = seg
        try:
            compiled_segments = docs.compile_segments(segment_docs.values())
        except docs.DocumentError as exc:
            raise _document_error(exc, None) from None
        work = []
        for entry in parsed.flags:
            flag = existing.get(entry["name"])
            current = docs.flag_doc(flag) if flag is not None else None
            desired = _desired(current, entry, envs)
            try:
                docs.check_flag(desired, compiled_segments)
            except docs.DocumentError as exc:
                raise _document_error(exc, entry["name"]) from None
            changes = _diff(current, desired)
            kind = "create" if flag is None else "update" if changes else "unchanged"
            plan.append(PlannedChange(entry["name"], kind, changes))
            work.append((flag, current, desired, kind))
        if dry_run:
            return plan
        for old, seg in segment_plan:
            _segment_write(seg, old, actor)
        for flag, current, desired, kind in work:
            if kind == "unchanged":
                continue
            _flag_write(flag, current, desired, actor)
    return plan


def _segment_write(seg: dict[str, Any], old: dict[str, Any] | None, actor: Actor) -> None:
    row, _ = Segment.objects.update_or_create(name=seg["name"], defaults={"description": seg["description"]})
    row.constraints.all().delete()
    _write_constraints(seg["constraints"], segment=row)
    audit_record(actor=actor, action="segment.import", obj=row, before=old, after=seg)
    flags_snapshot.bump()


def _flag_write(flag: Flag | None, current: dict[str, Any] | None, desired: dict[str, Any], actor: Actor) -> None:
    if flag is None:
        flag = Flag.objects.create(name=desired["name"])
    for key in ("type", "default_value", "description", "owner"):
        setattr(flag, key, desired[key])
    flag.save()
    if current is None or current["dependencies"] != desired["dependencies"]:
        _write_dependencies(flag, desired["dependencies"])
    rows = {r.environment.name: r for r in FlagState.objects.select_related("environment").filter(flag=flag)}
    envs = {e.name: e for e in Environment.objects.all()}
    for env, state in desired["environments"].items():
        if current is not None and current["environments"].get(env) == state:
            continue
        row = rows.get(env) or FlagState.objects.create(flag=flag, environment=envs[env])
        write_state(row, state)
    action = "flag.create" if current is None else "flag.import"
    before = _flat(current) if current is not None else None
    audit_record(actor=actor, action=action, obj=flag, before=before, after=_flat(desired))
    flags_snapshot.bump()


def flags_export() -> dict[str, Any]:
    """Every segment and flag, each state in the export's form (today's one line when it is simple)."""
    document = docs.read_document()
    return {"segments": document["segments"], "flags": [_shown(f) for f in document["flags"]]}


def flag_delete(*, name: str, actor: Actor) -> None:
    with transaction.atomic():
        flag = _locked(name)
        audit_record(actor=actor, action="flag.delete", obj=flag, before=_state(flag))
        flag.delete()
        flags_snapshot.bump()
