"""The targeting engine: Unleash's activation model, compiled once and evaluated fast.

Pure: no Django model, no query, no cache. A flag is described by frozen dataclasses
(``FlagDefinition`` > ``Strategy`` > ``Constraint`` / ``Segment`` / ``Variant``); every check that can
be done ahead of time (parsing numbers, dates, semvers, regexes, CIDRs, percentages) is done when
they are built, so ``evaluate`` only compares. The semantics are those of Unleash's SDKs, checked
against Unleash's client specification (tests/flags/test_unleash_conformance.py):

- The flag is on when it is enabled, its dependencies hold, and any strategy matches (no strategy at
  all means on for everyone). A strategy matches when every constraint of its segments and its own
  constraints match and its rule does (``default``: everyone; ``userWithId``: the listed user ids;
  ``flexibleRollout``: a bucket of the stickiness value; ``gradualRollout*``; ``remoteAddress``;
  ``applicationHostname``). An unknown strategy name never matches (SDKs log and answer false).
- Bucket: murmur3_32 (seed 0) of ``"{group id}:{stickiness value}"`` % 100 + 1, on when
  ``rollout > 0 and bucket <= rollout``. The group id defaults to the flag name, so today's flags
  (flags/evaluation.py) keep their buckets. Stickiness ``default`` is the user id, else the session
  id, else a random value (Unleash's rule: an anonymous caller gets a coin toss; ``Result.by_chance``
  says so, and OFREP may keep answering TARGETING_KEY_MISSING for it). A named stickiness field that
  is missing does not match. ``gradualRolloutRandom`` is random by design and cannot be deterministic.
- Variants: the matching strategy's variants if it has any (group id and stickiness of that
  strategy), else the flag's. An override (context field in values) wins; otherwise
  murmur3_32 (seed 86028157) of ``"{group id}:{stickiness value}"`` % total weight + 1 walks the
  cumulative weights. Variant stickiness ``default`` is user id, session id, random (as Unleash's
  engine in the SDKs draws; some older SDKs tried the remote address before random).
- Constraints: a missing field makes the operator false (``NOT_IN`` true: nothing is not in
  anything), then ``inverted`` negates, as the SDKs do. ``case_insensitive`` applies to the string
  operators, ``REGEX`` and (our addition, SDKs ignore it there) ``IN`` / ``NOT_IN``. ``IN`` values are
  trimmed and empty ones dropped (the SDKs' ``cleanValues``). A constraint that cannot be evaluated
  (unknown operator, bad regex, a semver that is not one) is refused by ``Constraint(...)``; the
  lenient path used for Unleash documents (``Constraint.lenient``, ``from_unleash``) keeps it as a
  constraint that never matches, inverted or not, which is what the specification expects.
- Dependencies: a parent must exist and have no dependencies of its own (Unleash allows one level);
  ``enabled`` true (the default) needs the parent on and, when variants are listed, the parent's
  variant among them; ``enabled`` false needs the parent off.

Regexes follow RE2 (what Unleash validates with): ``\\d \\w \\s \\b`` are ASCII, ``$`` is the end of
the text unless ``(?m)``, POSIX classes (``[[:alpha:]]``) and mid-pattern flags (``^(?i)abc$``) are
translated; look-around, back-references and ``\\p`` classes are refused.
"""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
import itertools
import json
import math
import operator
import random
import re
import socket
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import mmh3

from controlplane.errors import InvalidInput

DISABLED, TARGETING_MATCH, STATIC, SPLIT, DEFAULT = "DISABLED", "TARGETING_MATCH", "STATIC", "SPLIT", "DEFAULT"
VARIANT_SEED = 86028157

IN, NOT_IN = "IN", "NOT_IN"
STR_STARTS_WITH, STR_ENDS_WITH, STR_CONTAINS = "STR_STARTS_WITH", "STR_ENDS_WITH", "STR_CONTAINS"
NUM_EQ, NUM_GT, NUM_GTE, NUM_LT, NUM_LTE = "NUM_EQ", "NUM_GT", "NUM_GTE", "NUM_LT", "NUM_LTE"
SEMVER_EQ, SEMVER_GT, SEMVER_GTE, SEMVER_LT, SEMVER_LTE = (
    "SEMVER_EQ",
    "SEMVER_GT",
    "SEMVER_GTE",
    "SEMVER_LT",
    "SEMVER_LTE",
)
DATE_AFTER, DATE_BEFORE = "DATE_AFTER", "DATE_BEFORE"
REGEX, IN_CIDR = "REGEX", "IN_CIDR"

LIST_OPERATORS = frozenset({IN, NOT_IN, STR_STARTS_WITH, STR_ENDS_WITH, STR_CONTAINS, IN_CIDR})
NUM_OPERATORS = frozenset({NUM_EQ, NUM_GT, NUM_GTE, NUM_LT, NUM_LTE})
SEMVER_OPERATORS = frozenset({SEMVER_EQ, SEMVER_GT, SEMVER_GTE, SEMVER_LT, SEMVER_LTE})
DATE_OPERATORS = frozenset({DATE_AFTER, DATE_BEFORE})
OPERATORS = LIST_OPERATORS | NUM_OPERATORS | SEMVER_OPERATORS | DATE_OPERATORS | {REGEX}
CASE_OPERATORS = frozenset({IN, NOT_IN, STR_STARTS_WITH, STR_ENDS_WITH, STR_CONTAINS, REGEX})

STRATEGIES = frozenset(
    {
        "default",
        "userWithId",
        "flexibleRollout",
        "gradualRolloutUserId",
        "gradualRolloutSessionId",
        "gradualRolloutRandom",
        "remoteAddress",
        "applicationHostname",
    }
)
FLAG_TYPES = frozenset({"boolean", "string", "number", "object"})

# Context fields that are attributes of Context; any other name is read from its properties.
_STANDARD_FIELDS = {
    "userId": "user_id",
    "targetingKey": "user_id",
    "sessionId": "session_id",
    "remoteAddress": "remote_address",
    "environment": "environment",
    "appName": "app_name",
}


class InvalidTargeting(InvalidInput):
    """A constraint, strategy, variant or flag that cannot be evaluated; ``field`` names the part."""


# --- Context -----------------------------------------------------------------------------------------


def _text(value: object) -> str | None:
    """A context value as the text the operators compare (JSON numbers and booleans as written)."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


@dataclass(frozen=True, slots=True)
class Context:
    """Who is asking. ``user_id`` is the targeting key; ``current_time`` None means now."""

    user_id: str | None = None
    session_id: str | None = None
    remote_address: str | None = None
    environment: str | None = None
    app_name: str | None = None
    current_time: datetime | None = None
    properties: Mapping[str, str] = field(default_factory=dict)

    def get(self, name: str) -> str | None:
        attr = _STANDARD_FIELDS.get(name)
        if attr is not None:
            value: str | None = getattr(self, attr)
            if value is not None:
                return value
        if name == "currentTime":
            return self.now().isoformat()
        return self.properties.get(name)

    def now(self) -> datetime:
        return self.current_time if self.current_time is not None else datetime.now(UTC)

    @classmethod
    def of(cls, data: Mapping[str, Any]) -> Context:
        """From an Unleash context (``userId``, ``properties``...) or an OFREP one (``targetingKey`` and
        flat attributes). Non-string values become text; ``None`` is a missing field."""
        props: dict[str, str] = {}
        for source in (data, data.get("properties") or {}):
            for key, value in source.items():
                if key in ("properties", "currentTime") or key in _STANDARD_FIELDS:
                    continue
                text = _text(value)
                if text is not None:
                    props[key] = text
        when = data.get("currentTime")
        current: datetime | None = None
        if isinstance(when, datetime):
            current = when
        elif when is not None:
            current = _parse_date(str(when), "currentTime")
        return cls(
            user_id=_text(data.get("userId", data.get("targetingKey"))),
            session_id=_text(data.get("sessionId")),
            remote_address=_text(data.get("remoteAddress")),
            environment=_text(data.get("environment")),
            app_name=_text(data.get("appName")),
            current_time=current,
            properties=props,
        )


# --- Value parsers (shared by validation and evaluation) ---------------------------------------------

_SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$",
    re.ASCII,
)

# A comparable key: (major, minor, patch, release flag, prerelease identifiers). A release sorts after
# its prereleases; numeric identifiers sort before alphanumeric ones and numerically among themselves.
SemverKey = tuple[int, int, int, int, tuple[tuple[int, int, str], ...]]


@functools.lru_cache(maxsize=4096)  # the same few app versions are compared again and again
def semver_key(text: str) -> SemverKey | None:
    match = _SEMVER.match(text)
    if match is None:
        return None
    pre = match.group(4)
    idents: tuple[tuple[int, int, str], ...] = ()
    if pre:
        idents = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in pre.split("."))
    return (int(match.group(1)), int(match.group(2)), int(match.group(3)), 0 if pre else 1, idents)


def _parse_number(text: str, where: str) -> float:
    try:
        number = float(text)
    except (TypeError, ValueError):
        raise InvalidTargeting(where, f"{text!r} is not a number") from None
    if not math.isfinite(number):
        raise InvalidTargeting(where, f"{text!r} is not a finite number")
    return number


def _parse_date(text: str, where: str) -> datetime:
    try:
        when = datetime.fromisoformat(text)
    except (TypeError, ValueError):
        raise InvalidTargeting(where, f"{text!r} is not an ISO 8601 date and time") from None
    if when.tzinfo is None:
        raise InvalidTargeting(where, f"{text!r} has no time zone (add Z or an offset)")
    return when


_POSIX = {
    "alpha": "a-zA-Z",
    "digit": "0-9",
    "alnum": "0-9a-zA-Z",
    "upper": "A-Z",
    "lower": "a-z",
    "space": r" \t\n\r\f\v",
    "blank": r" \t",
    "xdigit": "0-9A-Fa-f",
    "word": "0-9A-Za-z_",
    "punct": r"!-/:-@\[-`{-~",
    "cntrl": r"\x00-\x1f\x7f",
    "print": r" -~",
    "graph": r"!-~",
    "ascii": r"\x00-\x7f",
}
_FLAG_GROUP = re.compile(r"\(\?([imsU]*)(?:-([imsU]*))?\)")


def _re2_to_python(pattern: str) -> str:
    """RE2 syntax to Python's ``re``; raises ValueError for what RE2 itself refuses."""
    out: list[str] = []
    reopen: list[list[str]] = [[]]  # per group: the flag groups opened in it (closed at | and ")")
    i, n = 0, len(pattern)
    multiline = "m" in "".join(m.group(1) for m in _FLAG_GROUP.finditer(pattern))
    while i < n:
        c = pattern[i]
        if c == "\\":
            if i + 1 >= n:
                raise ValueError("trailing backslash")
            nxt = pattern[i + 1]
            if nxt.isdigit() and nxt != "0":
                raise ValueError("back-references are not supported (RE2)")
            if nxt in "pP":
                raise ValueError(r"\p classes are not supported")
            if nxt == "z":
                out.append(r"\Z")
            elif nxt == "Q":
                end = pattern.find(r"\E", i + 2)
                end = n if end < 0 else end
                out.append(re.escape(pattern[i + 2 : end]))
                i = end + 2
                continue
            else:
                out.append(pattern[i : i + 2])
            i += 2
            continue
        if c == "[":
            j = i + 1
            chunk = ["["]
            if j < n and pattern[j] == "^":
                chunk.append("^")
                j += 1
            if j < n and pattern[j] == "]":
                chunk.append(r"\]")
                j += 1
            while j < n and pattern[j] != "]":
                if pattern.startswith("[:", j):
                    end = pattern.find(":]", j + 2)
                    name = pattern[j + 2 : end] if end > 0 else ""
                    if name not in _POSIX:
                        raise ValueError(f"unknown character class [:{name}:]")
                    chunk.append(_POSIX[name])
                    j = end + 2
                    continue
                if pattern[j] == "\\" and j + 1 < n:
                    chunk.append(pattern[j : j + 2])
                    j += 2
                    continue
                chunk.append("\\[" if pattern[j] == "[" else pattern[j])
                j += 1
            if j >= n:
                raise ValueError("missing ]")
            chunk.append("]")
            out.append("".join(chunk))
            i = j + 1
            continue
        if c == "(":
            flags = _FLAG_GROUP.match(pattern, i)
            if flags is not None:
                on, off = flags.group(1), flags.group(2) or ""
                if "U" in on + off:
                    raise ValueError("the U flag is not supported")
                spec = on + (f"-{off}" if off else "")
                if spec:
                    out.append(f"(?{spec}:")
                    reopen[-1].append(spec)
                i = flags.end()
                continue
            if pattern.startswith("(?", i):
                rest = pattern[i + 2 : i + 4]
                if rest[:1] in ("=", "!") or rest in ("<=", "<!"):
                    raise ValueError("look-around is not supported (RE2)")
                if rest[:1] == "<":  # (?<name>...) as RE2 spells it
                    out.append("(?P<")
                    i += 3
                    reopen.append([])
                    continue
                if rest[:1] == "P" and pattern[i + 3 : i + 4] == "=":
                    raise ValueError("back-references are not supported (RE2)")
            out.append("(")
            reopen.append([])
            i += 1
            continue
        if c == "|":
            opened = reopen[-1]
            out.append(")" * len(opened) + "|" + "".join(f"(?{s}:" for s in opened))
            i += 1
            continue
        if c == ")":
            if len(reopen) == 1:
                raise ValueError("unbalanced )")
            out.append(")" * len(reopen.pop()) + ")")
            i += 1
            continue
        if c == "$" and not multiline:
            out.append(r"\Z")
            i += 1
            continue
        out.append(c)
        i += 1
    if len(reopen) != 1:
        raise ValueError("missing )")
    out.append(")" * len(reopen[0]))
    return "".join(out)


def compile_regex(pattern: str, case_insensitive: bool = False) -> re.Pattern[str]:
    """An RE2 pattern compiled for Python (ASCII classes, like RE2); raises ValueError if invalid."""
    try:
        return re.compile(_re2_to_python(pattern), re.ASCII | (re.IGNORECASE if case_insensitive else 0))
    except re.error as exc:
        raise ValueError(str(exc)) from None


def _parse_network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(text.strip(), strict=False)


# --- Constraints -------------------------------------------------------------------------------------

Test = Callable[[str], bool]


def _never(_: object) -> bool:
    return False


@dataclass(frozen=True, slots=True)
class Constraint:
    """``field`` ``operator`` ``values`` (list operators) or ``value`` (the others).

    Built strictly: a value the operator cannot use raises InvalidTargeting naming it. ``broken`` (set
    only by ``lenient``) keeps an Unleash constraint that cannot be evaluated as one that never matches.
    """

    field: str
    operator: str
    values: tuple[str, ...] = ()
    value: str | None = None
    case_insensitive: bool = False
    inverted: bool = False
    broken: str = ""
    _test: Test = dataclasses.field(default=_never, init=False, repr=False, compare=False)
    _when: datetime | None = dataclasses.field(default=None, init=False, repr=False, compare=False)
    # The whole check (field lookup, missing field, operator, inverted) as one call: ctx -> bool.
    match: Callable[[Context], bool] = dataclasses.field(default=_never, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "values", tuple(self.values))
        if not self.broken:
            object.__setattr__(self, "_test", self._compile(lenient=False))
        object.__setattr__(self, "match", self._matcher())

    def _matcher(self) -> Callable[[Context], bool]:
        if self.broken:
            return _never
        test, inverted = self._test, self.inverted
        missing = (self.operator == NOT_IN) != inverted
        when = self._when
        if when is not None and self.field == "currentTime":
            if self.operator == DATE_AFTER:
                return lambda ctx: (ctx.now() > when) != inverted
            return lambda ctx: (ctx.now() < when) != inverted
        attr = _STANDARD_FIELDS.get(self.field)
        if attr is None and self.field != "currentTime":
            name = self.field

            def by_property(ctx: Context) -> bool:
                v = ctx.properties.get(name)
                return missing if v is None else test(v) != inverted

            return by_property
        if attr is not None:  # Context.get for a standard field, inlined: the attribute, else a property
            read = operator.attrgetter(attr)
            name = self.field

            def by_attribute(ctx: Context) -> bool:
                v = read(ctx)
                if v is None:
                    v = ctx.properties.get(name)
                return missing if v is None else test(v) != inverted

            return by_attribute
        get = self.field

        def by_field(ctx: Context) -> bool:
            v = ctx.get(get)
            return missing if v is None else test(v) != inverted

        return by_field

    @classmethod
    def lenient(
        cls,
        field: str,
        operator: str,
        values: Iterable[str] = (),
        value: str | None = None,
        case_insensitive: bool = False,
        inverted: bool = False,
    ) -> Constraint:
        """As Unleash's SDKs read a constraint: bad CIDR entries are skipped; anything else that
        cannot be evaluated makes a constraint that never matches (its reason in ``broken``)."""
        vals = tuple(str(v) for v in values)
        args = (field, operator, vals, value, case_insensitive, inverted)
        try:
            made = cls(*args, broken="pending")
            object.__setattr__(made, "_test", made._compile(lenient=True))
            object.__setattr__(made, "broken", "")
            object.__setattr__(made, "match", made._matcher())
            return made
        except InvalidTargeting as exc:
            return cls(*args, broken=exc.message)

    def _single(self) -> str:
        if self.value is not None:
            return self.value
        if len(self.values) == 1:
            return self.values[0]
        raise InvalidTargeting("value", f"{self.operator} needs one value")

    def _compile(self, *, lenient: bool) -> Test:
        op, ci = self.operator, self.case_insensitive
        if op not in OPERATORS:
            raise InvalidTargeting("operator", f"unknown operator {op!r}")
        if not self.field:
            raise InvalidTargeting("field", "a constraint needs a context field")
        if op in (IN, NOT_IN):
            cleaned = [v.strip() for v in self.values if v and v.strip()]
            members = frozenset(v.lower() for v in cleaned) if ci else frozenset(cleaned)
            if op == NOT_IN:
                return (lambda v: v.lower() not in members) if ci else (lambda v: v not in members)
            return (lambda v: v.lower() in members) if ci else members.__contains__
        if op in (STR_STARTS_WITH, STR_ENDS_WITH, STR_CONTAINS):
            needles = tuple(v.lower() for v in self.values) if ci else self.values
            if op == STR_STARTS_WITH:
                return (lambda v: v.lower().startswith(needles)) if ci else (lambda v: v.startswith(needles))
            if op == STR_ENDS_WITH:
                return (lambda v: v.lower().endswith(needles)) if ci else (lambda v: v.endswith(needles))
            if ci:
                return lambda v: any(n in v.lower() for n in needles)
            return lambda v: any(n in v for n in needles)
        if op in NUM_OPERATORS:
            target = _parse_number(self._single(), "value")
            compare = _NUM_COMPARE[op]

            def num_test(v: str) -> bool:
                # As the SDKs' engine reads a number: Python's float would also take surrounding spaces,
                # digit-group underscores and other scripts' digits (" 40", "1_000", "٣"); they are not numbers there.
                if not v.isascii() or "_" in v or v != v.strip():
                    return False
                try:
                    number = float(v)
                except ValueError:
                    return False
                return compare(number, target)

            return num_test
        if op in SEMVER_OPERATORS:
            text = self._single()
            key = semver_key(text)
            if key is None:
                raise InvalidTargeting("value", f"{text!r} is not a semantic version (like 1.2.3 or 2.0.0-rc.1)")
            semver_compare = _SEMVER_COMPARE[op]

            def semver_test(v: str) -> bool:
                other = semver_key(v)
                return other is not None and semver_compare(other, key)

            return semver_test
        if op in DATE_OPERATORS:
            when = _parse_date(self._single(), "value")
            object.__setattr__(self, "_when", when)
            after = op == DATE_AFTER

            def date_test(v: str) -> bool:
                try:
                    moment = datetime.fromisoformat(v)
                except ValueError:
                    return False
                if moment.tzinfo is None:
                    moment = moment.replace(tzinfo=UTC)
                return moment > when if after else moment < when

            return date_test
        if op == REGEX:
            text = self._single()
            try:
                pattern = compile_regex(text, ci)
            except ValueError as exc:
                raise InvalidTargeting("value", f"{text!r} is not a valid regular expression: {exc}") from None
            return lambda v: pattern.search(v) is not None
        # IN_CIDR
        networks = []
        for text in self.values:
            try:
                networks.append(_parse_network(text))
            except ValueError:
                if not lenient:
                    raise InvalidTargeting("values", f"{text!r} is not an IP address or CIDR range") from None
        nets = tuple(networks)

        def cidr_test(v: str) -> bool:
            try:
                address = ipaddress.ip_address(v.strip())
            except ValueError:
                return False
            return any(address in net for net in nets)

        return cidr_test

    def matches(self, ctx: Context) -> bool:
        return self.match(ctx)

    def describe(self) -> str:
        shown = self.value if self.value is not None else ", ".join(self.values)
        flags = "".join(
            (" (inverted)" if self.inverted else "", " (case-insensitive)" if self.case_insensitive else "")
        )
        text = f"{self.field} {self.operator} [{shown}]{flags}"
        return f"{text} — never matches: {self.broken}" if self.broken else text

    def to_unleash(self) -> dict[str, Any]:
        out: dict[str, Any] = {"contextName": self.field, "operator": self.operator}
        if self.value is not None:
            out["value"] = self.value
        if self.values or self.value is None:
            out["values"] = list(self.values)
        out["caseInsensitive"] = self.case_insensitive
        out["inverted"] = self.inverted
        return out


# The operator module's functions, not lambdas: no Python frame per comparison.
_NUM_COMPARE: dict[str, Callable[[float, float], bool]] = {
    NUM_EQ: operator.eq,
    NUM_GT: operator.gt,
    NUM_GTE: operator.ge,
    NUM_LT: operator.lt,
    NUM_LTE: operator.le,
}
_SEMVER_COMPARE: dict[str, Callable[[SemverKey, SemverKey], bool]] = {
    SEMVER_EQ: operator.eq,
    SEMVER_GT: operator.gt,
    SEMVER_GTE: operator.ge,
    SEMVER_LT: operator.lt,
    SEMVER_LTE: operator.le,
}


@dataclass(frozen=True, slots=True)
class Segment:
    """A named, reusable set of constraints that strategies refer to."""

    id: int | str
    name: str = ""
    constraints: tuple[Constraint, ...] = ()


# --- Variants ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Override:
    field: str
    values: frozenset[str]


@dataclass(frozen=True, slots=True)
class Variant:
    """A named value with a weight. ``payload`` is Unleash's (type, text) kept for its APIs."""

    name: str
    value: Any = None
    weight: int = 1
    stickiness: str = "default"
    overrides: tuple[Override, ...] = ()
    payload: tuple[str, str] | None = None

    def __post_init__(self) -> None:
        if not self.name:
            raise InvalidTargeting("name", "a variant needs a name")
        if not isinstance(self.weight, int) or isinstance(self.weight, bool) or self.weight < 0:  # type: ignore[redundant-expr]
            raise InvalidTargeting("weight", f"{self.weight!r} is not a weight (a whole number, 0 or more)")


def _check_value(flag_type: str, value: Any, where: str) -> None:
    ok = {
        "boolean": isinstance(value, bool),
        "string": isinstance(value, str),
        "number": isinstance(value, int | float) and not isinstance(value, bool),
        "object": isinstance(value, dict | list),
    }[flag_type]
    if not ok:
        raise InvalidTargeting(where, f"{value!r} is not a {flag_type}")


def _variant_value_from_payload(kind: str, raw: str) -> Any:
    if kind == "number":
        number = float(raw)
        return int(number) if number.is_integer() and "." not in raw else number
    if kind == "json":
        return json.loads(raw)
    return raw


# --- Strategies --------------------------------------------------------------------------------------


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _percent(parameters: Mapping[str, str], key: str) -> int:
    raw = parameters.get(key, "0")
    try:
        number = float(raw)
    except (TypeError, ValueError):
        raise InvalidTargeting(f"parameters.{key}", f"{raw!r} is not a percentage") from None
    if not 0 <= number <= 100:
        raise InvalidTargeting(f"parameters.{key}", f"{raw!r} is not between 0 and 100")
    return int(number)


@dataclass(frozen=True, slots=True)
class Strategy:
    """One way a flag turns on; ``parameters`` are Unleash's (strings), read once here."""

    name: str
    parameters: Mapping[str, str] = field(default_factory=dict)
    constraints: tuple[Constraint, ...] = ()
    segments: tuple[Segment, ...] = ()
    missing_segments: tuple[int | str, ...] = ()  # referenced, not defined: the strategy never matches
    variants: tuple[Variant, ...] = ()
    title: str = ""
    # userWithId: given as is (a key may hold a comma or spaces), else read from ``userIds``.
    user_ids: frozenset[str] = frozenset()
    # Read from parameters in __post_init__:
    rollout: int | None = field(default=None, init=False)
    stickiness: str = field(default="default", init=False)
    group_id: str | None = field(default=None, init=False)

    networks: tuple[Any, ...] = field(default=(), init=False, repr=False)
    all_constraints: tuple[Constraint, ...] = field(default=(), init=False, repr=False)

    def __post_init__(self) -> None:
        params = {str(k): str(v) for k, v in (self.parameters or {}).items()}
        object.__setattr__(self, "parameters", params)
        object.__setattr__(self, "constraints", tuple(self.constraints))
        object.__setattr__(self, "segments", tuple(self.segments))
        object.__setattr__(self, "variants", tuple(self.variants))
        name = self.name
        if name == "flexibleRollout":
            object.__setattr__(self, "rollout", _percent(params, "rollout"))
            object.__setattr__(self, "stickiness", params.get("stickiness") or "default")
            object.__setattr__(self, "group_id", params.get("groupId") or None)
        elif name in ("gradualRolloutUserId", "gradualRolloutSessionId", "gradualRolloutRandom"):
            object.__setattr__(self, "rollout", _percent(params, "percentage"))
            sticky = {"gradualRolloutUserId": "userId", "gradualRolloutSessionId": "sessionId"}.get(name, "random")
            object.__setattr__(self, "stickiness", sticky)
            object.__setattr__(self, "group_id", params.get("groupId") or None)
        elif name == "userWithId" and not self.user_ids:
            object.__setattr__(self, "user_ids", frozenset(_split(params.get("userIds", ""))))
        elif name == "remoteAddress":
            nets = []
            for text in _split(params.get("IPs", "")):
                try:
                    nets.append(_parse_network(text))
                except ValueError:
                    continue  # the SDKs skip an entry that is not an address
            object.__setattr__(self, "networks", tuple(nets))
        seg_constraints = tuple(c for s in self.segments for c in s.constraints)
        object.__setattr__(self, "all_constraints", self.constraints + seg_constraints)

    @classmethod
    def user_with_id(cls, user_ids: Iterable[str]) -> Strategy:
        ids = frozenset(user_ids)
        return cls("userWithId", {"userIds": ",".join(sorted(ids))}, user_ids=ids)

    @classmethod
    def flexible_rollout(
        cls, rollout: int, *, stickiness: str = "default", group_id: str = "", **kwargs: Any
    ) -> Strategy:
        params = {"rollout": str(rollout), "stickiness": stickiness, "groupId": group_id}
        return cls("flexibleRollout", params, **kwargs)

    @property
    def is_partial(self) -> bool:
        return self.rollout is not None and 0 < self.rollout < 100

    def describe(self, index: int) -> str:
        label = self.title or self.name
        if self.rollout is not None:
            label += f" {self.rollout} % by {self.stickiness}"
        elif self.name == "userWithId":
            label += f" ({len(self.user_ids)} user ids)"
        return f"strategy {index} ({label})"

    def to_unleash(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "parameters": dict(self.parameters)}
        out["constraints"] = [c.to_unleash() for c in self.constraints]
        if self.segments or self.missing_segments:
            out["segments"] = [s.id for s in self.segments] + list(self.missing_segments)
        if self.variants:
            out["variants"] = [_variant_to_unleash(v) for v in self.variants]
        if self.title:
            out["title"] = self.title
        return out


@dataclass(frozen=True, slots=True)
class Dependency:
    feature: str
    enabled: bool = True
    variants: tuple[str, ...] = ()


# --- Flags -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Explanation:
    """Why: the deciding strategy (index, name) and constraint, and one line per strategy tried."""

    summary: str
    strategy_index: int | None = None
    strategy_name: str | None = None
    constraint: str | None = None
    variant_source: str | None = None  # "strategy", "flag", "override" or None
    steps: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "summary": self.summary,
            "strategy_index": self.strategy_index,
            "strategy": self.strategy_name,
            "constraint": self.constraint,
            "variant_source": self.variant_source,
            "steps": list(self.steps),
        }


@dataclass(frozen=True, slots=True)
class Result:
    """``enabled`` is Unleash's isEnabled; ``variant`` the chosen one (None: Unleash's "disabled");
    ``value`` is ``enabled`` for a boolean flag, else the variant's value or the flag's default;
    ``strategy_index`` the strategy that turned it on; ``by_chance``: a random draw decided it (no
    stickiness value in the context); ``variant_source``: "strategy", "flag" or "override"."""

    enabled: bool
    variant: Variant | None
    value: Any
    reason: str
    strategy_index: int | None = None
    variant_source: str | None = None
    by_chance: bool = False
    explanation: Explanation | None = None

    @property
    def variant_name(self) -> str | None:
        return self.variant.name if self.variant is not None else None


Lookup = Callable[[str], "FlagDefinition | None"]
Check = Callable[[Context], bool]
Pick = Callable[[Context], Result]

# How a strategy's answer can be a coin toss: never, when the context has no user or session id
# (``default`` stickiness), always (``random``).
_NO_CHANCE, _CHANCE_WITHOUT_ID, _CHANCE_ALWAYS = 0, 1, 2


def _always(_: object) -> bool:
    return True


def _no_lookup(_: str) -> FlagDefinition | None:
    return None


def _random_key() -> str:
    return str(random.randint(1, 100_000))  # noqa: S311 (a coin toss for a rollout, not a secret)


_mmh3 = mmh3.hash


def _bytes(text: str) -> bytes:
    """``text`` as UTF-8, a lone surrogate kept (surrogatepass). Bytes, not str: mmh3 encodes a str
    itself and crashes on a lone surrogate. The plain encode is the common case and the fastest."""
    try:
        return text.encode()
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")


def _hash(prefix: str, key: str, seed: int) -> int:
    text = prefix + key
    try:  # _bytes inlined (the hot path of every rollout and variant draw)
        data = text.encode()
    except UnicodeEncodeError:
        data = text.encode("utf-8", "surrogatepass")
    return _mmh3(data, seed, False)


def _field_getter(name: str) -> Callable[[Context], str | None]:
    attr = _STANDARD_FIELDS.get(name)
    if attr is not None:
        return operator.attrgetter(attr)
    if name == "currentTime":
        return lambda ctx: ctx.get(name)
    return lambda ctx: ctx.properties.get(name)


def _rollout_rule(strategy: Strategy, group: str) -> Check:
    rollout, stickiness = strategy.rollout or 0, strategy.stickiness
    prefix = f"{group}:"
    if rollout == 0:
        return _never
    if stickiness in ("default", "random"):
        if rollout == 100:
            return _always
        if stickiness == "random":
            return lambda ctx: _hash(prefix, _random_key(), 0) % 100 + 1 <= rollout

        def by_default(ctx: Context) -> bool:
            text = prefix + (ctx.user_id or ctx.session_id or _random_key())
            try:  # _hash inlined
                data = text.encode()
            except UnicodeEncodeError:
                data = text.encode("utf-8", "surrogatepass")
            return _mmh3(data, 0, False) % 100 + 1 <= rollout

        return by_default
    get = _field_getter(stickiness)
    if rollout == 100:
        return lambda ctx: get(ctx) is not None

    def by_field(ctx: Context) -> bool:
        key = get(ctx)
        return key is not None and _hash(prefix, key, 0) % 100 + 1 <= rollout

    return by_field


def _rule(strategy: Strategy, group: str) -> Check:
    """The strategy's own rule, constraints aside."""
    name = strategy.name
    if name == "default":
        return _always
    if strategy.rollout is not None:
        return _rollout_rule(strategy, group)
    if name == "userWithId":
        ids = strategy.user_ids
        return lambda ctx: ctx.user_id in ids
    if name == "remoteAddress":
        nets = strategy.networks

        def by_address(ctx: Context) -> bool:
            if ctx.remote_address is None:
                return False
            try:
                ip = ipaddress.ip_address(ctx.remote_address.strip())
            except ValueError:
                return False
            return any(ip in net for net in nets)

        return by_address
    if name == "applicationHostname":
        hosts = frozenset(h.lower() for h in _split(strategy.parameters.get("hostNames", "")))
        # The SDK's own host; a context may name one (``hostname``) when we evaluate for a client.
        return lambda ctx: (ctx.properties.get("hostname") or socket.gethostname()).lower() in hosts
    return _never  # an unknown strategy: the SDKs answer false


def _check(strategy: Strategy, group: str) -> Check:
    if strategy.missing_segments:
        return _never
    rule = _rule(strategy, group)
    matchers = tuple(c.match for c in strategy.all_constraints)
    if not matchers:
        return rule

    def check(ctx: Context) -> bool:
        for m in matchers:
            if not m(ctx):
                return False
        return rule(ctx)

    return check


def _chance_kind(strategy: Strategy) -> int:
    if strategy.name == "gradualRolloutRandom" or strategy.stickiness == "random":
        return _CHANCE_ALWAYS if strategy.is_partial else _NO_CHANCE
    if strategy.stickiness == "default" and strategy.is_partial:
        return _CHANCE_WITHOUT_ID
    return _NO_CHANCE


def _picker(
    variants: tuple[Variant, ...],
    group: str,
    stickiness: str,
    results: tuple[Result, ...],
    overridden: tuple[Result, ...],
) -> Pick | None:
    """ctx -> the Result of the chosen variant (precomputed), or None when no variant can be chosen."""
    total = sum(v.weight for v in variants)
    overrides = [(o, i) for i, v in enumerate(variants) for o in v.overrides]
    if total <= 0 and not overrides:
        return None
    prefix = f"{group}:"
    get = None if stickiness == "default" else _field_getter(stickiness)
    # The SDKs walk the cumulative weights to the first one >= target: bisect_left on them.
    cumulative = tuple(itertools.accumulate(v.weight for v in variants))
    last = len(results) - 1
    by_chance = tuple(dataclasses.replace(r, by_chance=True) for r in results)

    def pick(ctx: Context) -> Result:
        for o, index in overrides:
            value = ctx.get(o.field)
            if value is not None and value in o.values:
                return overridden[index]
        if not last:
            return results[0]
        # Unleash's engine (yggdrasil, in its SDKs) draws by the user id, else the session id, else at
        # random: the remote address is not a variant's stickiness.
        key = (ctx.user_id or ctx.session_id) if get is None else get(ctx)
        if not key:
            return by_chance[min(bisect_left(cumulative, _hash(prefix, _random_key(), VARIANT_SEED) % total + 1), last)]
        text = prefix + key
        try:  # _hash inlined
            data = text.encode()
        except UnicodeEncodeError:
            data = text.encode("utf-8", "surrogatepass")
        return results[min(bisect_left(cumulative, _mmh3(data, VARIANT_SEED, False) % total + 1), last)]

    if total <= 0:  # only overrides can choose (the SDKs pick nothing by weight then)

        def pick_override(ctx: Context) -> Result:
            for o, index in overrides:
                value = ctx.get(o.field)
                if value is not None and value in o.values:
                    return overridden[index]
            return _NO_VARIANT

        return pick_override
    return pick


_NO_VARIANT = Result(True, None, None, "")  # a marker: fall back to the result without a variant


@dataclass(frozen=True, slots=True)
class FlagDefinition:
    """A flag's state in one environment, compiled. ``default_value`` is the value of a non-boolean
    flag that is off or has no variant for the context (None: the caller's own default).

    Reasons: DISABLED (flag off); DEFAULT (a dependency unmet, or no strategy matched while some
    strategy depends on the context); STATIC (no strategy matched and none could for anyone; or on by
    a strategy that matches everyone: ``default`` or a 100 % rollout without constraints, or no
    strategies at all); SPLIT (a partial rollout decided, or a variant was drawn among several);
    TARGETING_MATCH (on by user ids, constraints, an address, a host, or a variant override).
    """

    name: str
    enabled: bool = True
    strategies: tuple[Strategy, ...] = ()
    variants: tuple[Variant, ...] = ()
    dependencies: tuple[Dependency, ...] = ()
    type: str = "boolean"
    default_value: Any = None
    description: str = ""
    static: bool = dataclasses.field(default=False, init=False)  # one answer for everyone
    _checks: tuple[Check, ...] = dataclasses.field(default=(), init=False, repr=False, compare=False)
    _hits: tuple[Result, ...] = dataclasses.field(default=(), init=False, repr=False, compare=False)
    _picks: tuple[Pick | None, ...] = dataclasses.field(default=(), init=False, repr=False, compare=False)
    _chances: tuple[int, ...] = dataclasses.field(default=(), init=False, repr=False, compare=False)
    _chancy: bool = dataclasses.field(default=False, init=False, repr=False, compare=False)
    # Per strategy (check, hit, pick, chance kind, hit by chance): what evaluate's loop reads.
    _plan: tuple[tuple[Check, Result, Pick | None, int, Result], ...] = dataclasses.field(
        default=(), init=False, repr=False, compare=False
    )
    _miss_by_chance: Result = dataclasses.field(default=_NO_VARIANT, init=False, repr=False, compare=False)
    _off: Result = dataclasses.field(default=_NO_VARIANT, init=False, repr=False, compare=False)
    _unmet: Result = dataclasses.field(default=_NO_VARIANT, init=False, repr=False, compare=False)
    _miss: Result = dataclasses.field(default=_NO_VARIANT, init=False, repr=False, compare=False)
    # ctx -> Result for the shapes today's flags take (see _fast_path), None: the general path.
    _fast: Callable[[Context], Result] | None = dataclasses.field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "strategies", tuple(self.strategies))
        set_(self, "variants", tuple(self.variants))
        set_(self, "dependencies", tuple(self.dependencies))
        if self.type not in FLAG_TYPES:
            raise InvalidTargeting("type", f"{self.type!r} is not one of {', '.join(sorted(FLAG_TYPES))}")
        if self.type != "boolean":
            for where, variants in [("variants", self.variants)] + [
                (f"strategies[{i}].variants", s.variants) for i, s in enumerate(self.strategies)
            ]:
                for j, v in enumerate(variants):
                    _check_value(self.type, v.value, f"{where}[{j}].value")
            if self.default_value is not None:
                _check_value(self.type, self.default_value, "default_value")
        static = not self.dependencies and all(
            not s.all_constraints and not s.missing_segments and (s.name == "default" or s.rollout in (0, 100))
            for s in self.strategies
        )
        set_(self, "static", static)
        off_value = False if self.type == "boolean" else self.default_value
        set_(self, "_off", Result(False, None, off_value, DISABLED))
        set_(self, "_unmet", Result(False, None, off_value, DEFAULT))
        partial = any(s.is_partial for s in self.strategies)
        set_(self, "_miss", Result(False, None, off_value, SPLIT if partial else STATIC if static else DEFAULT))
        checks, hits, picks = [], [], []
        for index, s in enumerate(self.strategies):
            group = s.group_id or self.name
            checks.append(_check(s, group))
            if s.is_partial:
                reason = SPLIT
            elif s.all_constraints or s.name in ("userWithId", "remoteAddress", "applicationHostname"):
                reason = TARGETING_MATCH
            else:
                reason = STATIC
            hits.append(self._result(None, reason, index, None))
            if s.variants:
                sticky = s.stickiness if s.rollout is not None else "default"
                if sticky == "default" and s.variants[0].stickiness not in ("", "default"):
                    sticky = s.variants[0].stickiness
                picks.append(self._variant_picker(s.variants, group, sticky, reason, index, "strategy"))
            elif self.variants:
                sticky = self.variants[0].stickiness or "default"
                picks.append(self._variant_picker(self.variants, self.name, sticky, reason, index, "flag"))
            else:
                picks.append(None)
        set_(self, "_checks", tuple(checks))
        set_(self, "_hits", tuple(hits))
        set_(self, "_picks", tuple(picks))
        set_(self, "_chances", tuple(_chance_kind(s) for s in self.strategies))
        set_(self, "_chancy", any(self._chances))
        by_chance = tuple(dataclasses.replace(hit, by_chance=True) for hit in self._hits)
        plan = zip(self._checks, self._hits, self._picks, self._chances, by_chance, strict=True)
        set_(self, "_plan", tuple(plan))
        set_(self, "_miss_by_chance", dataclasses.replace(self._miss, by_chance=True))
        set_(self, "_fast", _fast_path(self))

    def _result(self, variant: Variant | None, reason: str, index: int | None, source: str | None) -> Result:
        if self.type == "boolean":
            value: Any = True
        else:
            value = variant.value if variant is not None else self.default_value
        return Result(True, variant, value, reason, index, source)

    def _variant_picker(
        self, variants: tuple[Variant, ...], group: str, sticky: str, reason: str, index: int, source: str
    ) -> Pick | None:
        drawn = reason if sum(1 for v in variants if v.weight) < 2 or reason == SPLIT else SPLIT
        results = tuple(self._result(v, drawn, index, source) for v in variants)
        overridden = tuple(self._result(v, TARGETING_MATCH, index, "override") for v in variants)
        return _picker(variants, group, sticky, results, overridden)

    @classmethod
    def simple(cls, name: str, *, enabled: bool, rollout_percent: int, targeting_keys: Iterable[str]) -> FlagDefinition:
        """Today's flag (flags/evaluation.py): named users, then a rollout with the flag name as
        group id and the targeting key as stickiness, so every key keeps its bucket."""
        keys = frozenset(targeting_keys)
        strategies = [Strategy.user_with_id(keys)] if keys else []
        strategies.append(Strategy.flexible_rollout(rollout_percent, group_id=name))
        return cls(name=name, enabled=enabled, strategies=tuple(strategies))


def _plain(strategy: Strategy) -> bool:
    return not strategy.all_constraints and not strategy.missing_segments and not strategy.variants


def _fast_path(flag: FlagDefinition) -> Callable[[Context], Result] | None:
    """One closure doing exactly what the general path of ``evaluate`` does, for the shapes today's
    flags (``FlagDefinition.simple``) and most Unleash imports take: off; or no dependencies, no
    variants and strategies ``[userWithId][, default | flexibleRollout by default stickiness]``
    without constraints or segments. It returns the same precomputed Results (the coin-toss ones
    made once here, not per call). Anything else: None (the general path)."""
    if not flag.enabled:
        off = flag._off
        return lambda ctx: off
    if flag.dependencies or flag.variants:
        return None
    strategies = flag.strategies
    if not strategies:
        everyone = flag._result(None, STATIC, None, None)
        return lambda ctx: everyone
    if len(strategies) > 2 or not all(_plain(s) for s in strategies):
        return None
    with_ids = strategies[0].name == "userWithId"
    rest = strategies[1:] if with_ids else strategies
    if rest:
        rule = rest[0]
        if rule.name == "default":
            rollout = 100
        elif rule.name == "flexibleRollout" and rule.stickiness == "default" and rule.rollout is not None:
            rollout = rule.rollout
        else:
            return None
    elif with_ids:
        rollout = 0  # no rule after the user ids: everyone else misses
    else:
        return None  # two strategies, the first not userWithId
    ids = strategies[0].user_ids if with_ids else frozenset()
    named = flag._hits[0]
    hit = flag._hits[-1]
    miss = flag._miss
    if rollout == 0:
        if not with_ids:
            return lambda ctx: miss
        return lambda ctx: named if ctx.user_id in ids else miss
    if rollout == 100:
        if not with_ids:
            return lambda ctx: hit
        return lambda ctx: named if ctx.user_id in ids else hit
    # A partial rollout: Unleash's bucket of the user id, else the session id, else a coin toss.
    prefix = f"{rule.group_id or flag.name}:"
    hit_by_chance = flag._plan[-1][4]
    miss_by_chance = flag._miss_by_chance
    hash_ = _mmh3

    def by_chance() -> Result:
        inside = hash_(_bytes(prefix + _random_key()), 0, False) % 100 + 1 <= rollout
        return hit_by_chance if inside else miss_by_chance

    if with_ids:

        def named_or_rollout(ctx: Context) -> Result:
            uid = ctx.user_id
            if uid in ids:
                return named
            key = uid or ctx.session_id
            if not key:
                return by_chance()
            try:
                data = (prefix + key).encode()
            except UnicodeEncodeError:
                data = (prefix + key).encode("utf-8", "surrogatepass")
            return hit if hash_(data, 0, False) % 100 + 1 <= rollout else miss

        return named_or_rollout

    def rollout_only(ctx: Context) -> Result:
        key = ctx.user_id or ctx.session_id
        if not key:
            return by_chance()
        try:
            data = (prefix + key).encode()
        except UnicodeEncodeError:
            data = (prefix + key).encode("utf-8", "surrogatepass")
        return hit if hash_(data, 0, False) % 100 + 1 <= rollout else miss

    return rollout_only


def _dependencies_hold(flag: FlagDefinition, ctx: Context, lookup: Lookup) -> str | None:
    """None when every dependency holds, else why not."""
    return _dependencies_check(flag, ctx, lookup)[0]


def _dependencies_check(flag: FlagDefinition, ctx: Context, lookup: Lookup) -> tuple[str | None, bool]:
    """(None when every dependency holds, else why not; whether a parent's answer was a coin toss, which
    makes the child's one too)."""
    chance = False
    for dep in flag.dependencies:
        parent = lookup(dep.feature)
        if parent is None:
            return f"parent {dep.feature!r} does not exist", chance
        if parent.dependencies:
            return f"parent {dep.feature!r} has dependencies of its own (one level only)", chance
        result = evaluate(parent, ctx)
        chance = chance or result.by_chance
        if dep.enabled:
            if not result.enabled:
                return f"parent {dep.feature!r} is off", chance
            name = result.variant_name or "disabled"
            if dep.variants and name not in dep.variants:
                return f"parent {dep.feature!r} has variant {name!r}, not one of {list(dep.variants)}", chance
        elif result.enabled:
            return f"parent {dep.feature!r} is on (needed off)", chance
    return None, chance


def evaluate(flag: FlagDefinition, ctx: Context, lookup: Lookup = _no_lookup, *, explain: bool = False) -> Result:
    """The flag's answer for ``ctx``; ``lookup`` finds parent flags by name (dependencies).
    ``explain`` adds the Explanation (slower: it describes every strategy tried)."""
    if explain:
        return _explained(flag, ctx, lookup)
    fast = flag._fast
    if fast is not None:
        return fast(ctx)
    # The general path (the fast one, when there is one, answers exactly as this would).
    if not flag.enabled:
        return flag._off
    if flag.dependencies:
        unmet, chance = _dependencies_check(flag, ctx, lookup)
        result = flag._unmet if unmet is not None else _by_rules(flag, ctx)
        if chance and not result.by_chance:  # a parent drawn at random decided for the child too
            result = dataclasses.replace(result, by_chance=True)
        return result
    return _by_rules(flag, ctx)


def _by_rules(flag: FlagDefinition, ctx: Context) -> Result:
    """The enabled flag's answer by its strategies and variants (dependencies aside)."""
    checks = flag._checks
    if not checks:
        return flag._result(None, STATIC, None, None) if not flag.variants else _no_strategy_variant(flag, ctx)
    for check, hit, pick, kind, hit_by_chance in flag._plan:
        if check(ctx):
            if pick is None:
                if kind and (kind == _CHANCE_ALWAYS or not (ctx.user_id or ctx.session_id)):
                    return hit_by_chance
                return hit
            result = pick(ctx)
            if result is _NO_VARIANT:
                result = hit
            if kind and (kind == _CHANCE_ALWAYS or not (ctx.user_id or ctx.session_id)) and not result.by_chance:
                result = dataclasses.replace(result, by_chance=True)
            return result
    # _by_chance of any strategy's kind: some kind is not _NO_CHANCE when _chancy.
    if flag._chancy and (_CHANCE_ALWAYS in flag._chances or not (ctx.user_id or ctx.session_id)):
        return flag._miss_by_chance
    return flag._miss


def _no_strategy_variant(flag: FlagDefinition, ctx: Context) -> Result:
    """No strategies (on for everyone) with flag variants: rare, so built per call."""
    sticky = flag.variants[0].stickiness or "default"
    pick = flag._variant_picker(flag.variants, flag.name, sticky, STATIC, -1, "flag")
    result = pick(ctx) if pick is not None else _NO_VARIANT
    if result is _NO_VARIANT:
        return flag._result(None, STATIC, None, None)
    return dataclasses.replace(result, strategy_index=None)


def _explained(flag: FlagDefinition, ctx: Context, lookup: Lookup) -> Result:
    """The same answer as ``evaluate`` with the story: each strategy tried, and what decided."""
    if not flag.enabled:
        return dataclasses.replace(flag._off, explanation=Explanation("off: the flag is disabled"))
    unmet, chance = _dependencies_check(flag, ctx, lookup) if flag.dependencies else (None, False)
    if unmet is not None:
        explanation = Explanation(f"off: a dependency is not met: {unmet}")
        return dataclasses.replace(flag._unmet, explanation=explanation, by_chance=chance)
    result = evaluate(flag, ctx, lookup)
    decided = result.strategy_index if result.enabled else None
    steps: list[str] = []
    first: tuple[int, str, str | None] | None = None
    for index, strategy in enumerate(flag.strategies):
        label = strategy.describe(index)
        if index == decided:
            count = len(strategy.all_constraints)
            why = f"{count} constraint(s) matched" if count else "its rule matched"
            if strategy.rollout is not None:
                why += f" and the {strategy.rollout} % rollout included this {strategy.stickiness} value"
            steps.append(f"{label}: on ({why})")
            break
        if strategy.missing_segments:
            steps.append(f"{label}: segment {strategy.missing_segments[0]!r} does not exist")
            first = first or (index, strategy.name, None)
            continue
        failed = next((c for c in strategy.all_constraints if not c.match(ctx)), None)
        if failed is not None:
            steps.append(f"{label}: constraint {failed.describe()} does not match")
            first = first or (index, strategy.name, failed.describe())
        else:
            steps.append(f"{label}: its rule does not match")
            first = first or (index, strategy.name, None)
    if result.enabled:
        if decided is None:
            summary = "on: the flag has no strategies (on for everyone)"
        else:
            summary = f"on: {steps[-1]}"
        if result.variant is not None:
            summary += f"; variant {result.variant.name!r} ({result.variant_source})"
        explanation = Explanation(
            summary,
            decided,
            flag.strategies[decided].name if decided is not None else None,
            None,
            result.variant_source,
            tuple(steps),
        )
    else:
        idx, name, text = first if first is not None else (None, None, None)
        explanation = Explanation("off: no strategy matched", idx, name, text, None, tuple(steps))
    return dataclasses.replace(result, explanation=explanation)


# --- Unleash's features document ---------------------------------------------------------------------


def _variant_to_unleash(v: Variant) -> dict[str, Any]:
    out: dict[str, Any] = {"name": v.name, "weight": v.weight, "stickiness": v.stickiness}
    if v.payload is not None:
        out["payload"] = {"type": v.payload[0], "value": v.payload[1]}
    if v.overrides:
        out["overrides"] = [{"contextName": o.field, "values": sorted(o.values)} for o in v.overrides]
    return out


def _parse_variant(data: Mapping[str, Any], where: str) -> Variant:
    payload = data.get("payload")
    value: Any = None
    pair: tuple[str, str] | None = None
    if payload:
        kind, raw = str(payload.get("type", "string")), str(payload.get("value", ""))
        pair = (kind, raw)
        try:
            value = _variant_value_from_payload(kind, raw)
        except ValueError:
            raise InvalidTargeting(f"{where}.payload", f"{raw!r} is not a valid {kind} payload") from None
    overrides = tuple(
        Override(str(o.get("contextName", "")), frozenset(str(x) for x in o.get("values") or ()))
        for o in data.get("overrides") or ()
    )
    weight = data.get("weight", 0)
    return Variant(
        name=str(data.get("name", "")),
        value=value,
        weight=int(weight) if isinstance(weight, int | float | str) and str(weight).lstrip("-").isdigit() else weight,
        stickiness=str(data.get("stickiness") or "default"),
        overrides=overrides,
        payload=pair,
    )


def _parse_constraint(data: Mapping[str, Any], strict: bool, where: str) -> Constraint:
    args = dict(
        field=str(data.get("contextName", "")),
        operator=str(data.get("operator", "")),
        values=tuple(str(v) for v in data.get("values") or () if v is not None),
        value=None if data.get("value") is None else str(data.get("value")),
        case_insensitive=bool(data.get("caseInsensitive", False)),
        inverted=bool(data.get("inverted", False)),
    )
    if not strict:
        return Constraint.lenient(**args)  # type: ignore[arg-type]
    try:
        return Constraint(**args)  # type: ignore[arg-type]
    except InvalidTargeting as exc:
        raise InvalidTargeting(f"{where}.{exc.field}", exc.message) from None


def _infer_type(variants: list[Variant]) -> str:
    kinds = {v.payload[0] for v in variants if v.payload is not None}
    if not kinds:
        return "boolean"
    if kinds == {"number"}:
        return "number"
    if kinds == {"json"} and all(isinstance(v.value, dict | list) for v in variants if v.payload):
        return "object"
    return "string"


def from_unleash(document: Mapping[str, Any], *, strict: bool = False) -> dict[str, FlagDefinition]:
    """Unleash's features document (``/api/client/features`` or an export) as our definitions.

    Strategy parameters are strings, as Unleash sends them. The flag's type is inferred from its
    variants' payloads (none: boolean; all number: number; all json objects: object; else string,
    where a number or json payload keeps its text). ``strict`` refuses a constraint that cannot be
    evaluated (naming it); by default it is kept as one that never matches, as the SDKs do.
    """
    segments: dict[Any, Segment] = {}
    for s_index, seg in enumerate(document.get("segments") or ()):
        where = f"segments[{s_index}]"
        constraints = tuple(
            _parse_constraint(c, strict, f"{where}.constraints[{i}]")
            for i, c in enumerate(seg.get("constraints") or ())
        )
        segments[seg.get("id")] = Segment(id=seg.get("id"), name=str(seg.get("name") or ""), constraints=constraints)
    flags: dict[str, FlagDefinition] = {}
    for f_index, feature in enumerate(document.get("features") or ()):
        name = str(feature.get("name", ""))
        where = f"features[{f_index}]"
        if not name:
            raise InvalidTargeting(f"{where}.name", "a feature needs a name")
        strategies = []
        all_variants: list[Variant] = []
        for s_index, st in enumerate(feature.get("strategies") or ()):
            sw = f"{where}.strategies[{s_index}]"
            if st.get("disabled"):
                continue  # Unleash does not send (nor evaluate) a disabled strategy
            constraints = tuple(
                _parse_constraint(c, strict, f"{sw}.constraints[{i}]")
                for i, c in enumerate(st.get("constraints") or ())
            )
            refs = list(st.get("segments") or ())
            found = tuple(segments[r] for r in refs if r in segments)
            missing = tuple(r for r in refs if r not in segments)
            if strict and missing:
                raise InvalidTargeting(f"{sw}.segments", f"segment {missing[0]!r} does not exist")
            variants = tuple(_parse_variant(v, f"{sw}.variants[{i}]") for i, v in enumerate(st.get("variants") or ()))
            all_variants.extend(variants)
            try:
                strategies.append(
                    Strategy(
                        name=str(st.get("name", "")),
                        parameters=st.get("parameters") or {},
                        constraints=constraints,
                        segments=found,
                        missing_segments=missing,
                        variants=variants,
                        title=str(st.get("title") or ""),
                    )
                )
            except InvalidTargeting as exc:
                raise InvalidTargeting(f"{sw}.{exc.field}", exc.message) from None
        variants = tuple(
            _parse_variant(v, f"{where}.variants[{i}]") for i, v in enumerate(feature.get("variants") or ())
        )
        all_variants.extend(variants)
        dependencies = tuple(
            Dependency(
                feature=str(d.get("feature", "")),
                enabled=d.get("enabled", True) is not False,
                variants=tuple(str(x) for x in d.get("variants") or ()),
            )
            for d in feature.get("dependencies") or ()
        )
        flag_type = _infer_type(all_variants)
        if flag_type == "string":  # a number or json payload keeps its text in a string flag
            strategies = [
                _restring(s) if any(not isinstance(v.value, str) for v in s.variants) else s for s in strategies
            ]
            variants = tuple(_as_string(v) for v in variants)
        flags[name] = FlagDefinition(
            name=name,
            enabled=bool(feature.get("enabled", False)),
            strategies=tuple(strategies),
            variants=variants,
            dependencies=dependencies,
            type=flag_type,
            description=str(feature.get("description") or ""),
        )
    return flags


def _as_string(v: Variant) -> Variant:
    if isinstance(v.value, str) or v.payload is None:
        return v if v.payload is not None else Variant(v.name, v.name, v.weight, v.stickiness, v.overrides, None)
    return Variant(v.name, v.payload[1], v.weight, v.stickiness, v.overrides, v.payload)


def _restring(s: Strategy) -> Strategy:
    return Strategy(
        name=s.name,
        parameters=s.parameters,
        constraints=s.constraints,
        segments=s.segments,
        missing_segments=s.missing_segments,
        variants=tuple(_as_string(v) for v in s.variants),
        title=s.title,
    )


def unleash_variant(result: Result) -> dict[str, Any]:
    """The Unleash SDKs' getVariant answer for a result (what the specification's variantTests hold)."""
    v = result.variant
    if v is None:
        return {"name": "disabled", "enabled": False, "feature_enabled": result.enabled}
    out: dict[str, Any] = {"name": v.name, "enabled": True, "feature_enabled": result.enabled}
    if v.payload is not None:
        out["payload"] = {"type": v.payload[0], "value": v.payload[1]}
    return out
