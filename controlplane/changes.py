"""What changed, and when: the deployments, flag changes and rollout steps the charts and alerts show.

A change is an audit event whose action an app declared a change from its ``apps.py``
(``register_change_kind``): deployments its runs' start, rollback and end, flags their changes, a
guarded rollout its steps. The ground reads them without importing any app, so monitoring's charts and
alerting's alerts ask ``changes_between`` and learn of a new kind the day its app registers it.

Each read is one query on the audit table, served by its index on ``time`` (a window of an hour or a few
days of events, filtered by action there); ``changes_before`` adds one for each alert whose hour the first
query's limit cut short.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from django.db.models import Q

from controlplane.audit import describe_change
from controlplane.models import AuditEvent

K = TypeVar("K")

# What a firing alert lists: the changes of the hour before it fired.
BEFORE_ALERT = timedelta(hours=1)
# A chart shows at most this many (the newest): a flood of flag edits must not make a page slow.
MAX_CHANGES = 200


@dataclass(frozen=True)
class Change:
    time: datetime
    kind: str  # "deployment", "flag", ...: the registered kind
    action: str  # the audit action ("deployment.started")
    what: str  # in words: "deployment #12 of v2.1 to production started"
    who: str  # the actor, as named when it happened

    @property
    def words(self) -> str:
        """What, who and when in one line: a marker's hover text and its line in the text alternative."""
        return f"{self.time:%Y-%m-%d %H:%M} {self.what}, by {self.who}"

    def marker(self, x: float, hit: float = 3) -> dict[str, Any]:
        """What a chart draws at ``x``: its line, a transparent strip ``2 * hit`` wide around it that the
        pointer can find, and its words for the strip's ``<title>``."""
        return {"x": round(x, 1), "hit_x": round(x - hit, 1), "kind": self.kind, "title": self.words}

    def as_dict(self) -> dict[str, str]:
        return {"time": self.time.isoformat(), "kind": self.kind, "what": self.what, "who": self.who}


# Told the action, the object's label and the event's before and after; says what happened in words.
Describe = Callable[[str, str, Any, Any], str]


@dataclass(frozen=True)
class ChangeKind:
    kind: str
    prefix: str  # every action starting with it is a change of this kind...
    exclude: frozenset[str]  # ...but these (requests, plans: nothing changed yet)
    describe: Describe


def _describe(action: str, label: str, before: Any, after: Any) -> str:
    words = describe_change(before, after, action)
    return f"{action} {label}" + (f": {words}" if words else "")


# kind -> its declaration; a dict, so a second ready() (tests that reload apps) replaces rather than repeats.
_REGISTRY: dict[str, ChangeKind] = {}


def register_change_kind(
    kind: str, *, prefix: str, exclude: Iterable[str] = (), describe: Describe | None = None
) -> None:
    """Declare the audit actions starting with ``prefix`` (but those in ``exclude``) changes of ``kind``."""
    if not prefix.endswith("."):
        raise ValueError(f"a change prefix ends with a dot: {prefix!r}")
    _REGISTRY[kind] = ChangeKind(kind, prefix, frozenset(exclude), describe or _describe)


def change_kinds() -> list[ChangeKind]:
    return list(_REGISTRY.values())


def _kind_of(action: str) -> ChangeKind | None:
    """The kind of the longest prefix that claims ``action`` ("flag.rollout." before "flag.")."""
    claims = [k for k in _REGISTRY.values() if action.startswith(k.prefix) and action not in k.exclude]
    return max(claims, key=lambda k: len(k.prefix), default=None)


def _query(start: datetime, end: datetime) -> Q | None:
    kinds = _REGISTRY.values()
    if not kinds:
        return None
    matches = Q()
    for declared in kinds:
        matches |= Q(action__startswith=declared.prefix) & ~Q(action__in=sorted(declared.exclude))
    # A dry run changes nothing, whoever records it. Spelt out: a bare ~Q(after__dry_run=True) would also
    # drop every event whose after has no such key (NOT NULL is not true in SQL).
    not_dry = Q(after__isnull=True) | ~Q(after__has_key="dry_run") | Q(after__dry_run=False)
    return Q(time__gte=start, time__lt=end) & matches & not_dry


def changes_between(start: datetime, end: datetime, *, limit: int = MAX_CHANGES) -> list[Change]:
    """The changes from ``start`` (included) to ``end`` (excluded), oldest first: the newest ``limit``."""
    where = _query(start, end)
    if where is None:
        return []
    rows = (
        AuditEvent.objects.filter(where)
        .order_by("-time", "-id")
        .values_list("time", "action", "object_label", "actor_label", "before", "after")[:limit]
    )
    found = []
    for time, action, label, who, before, after in rows:
        declared = _kind_of(action)
        if declared is None:  # an exclusion the database read differently; never shown
            continue
        try:
            what = declared.describe(action, label, before, after)
        except Exception:  # noqa: BLE001 - an old event in an unexpected shape still shows, plainly
            what = _describe(action, label, None, None)
        found.append(Change(time=time, kind=declared.kind, action=action, what=what, who=who))
    return found[::-1]


def changes_before(
    moments: Mapping[K, datetime],
    span: timedelta = BEFORE_ALERT,
    *,
    known: Sequence[Change] | None = None,
    known_since: datetime | None = None,
) -> dict[K, list[Change]]:
    """For each key (an alert), the changes of the ``span`` before its moment (when it fired): the newest
    ``MAX_CHANGES`` of its own window, whatever the other alerts' windows hold.

    ``known`` are changes a page read already from ``known_since`` on (``changes_between``'s answer):
    moments they cover are answered from them; the others with one query over all their windows, and
    a query of its own for an alert whose window that query's limit cut short (a flood of changes
    between alerts that fired far apart).
    """
    found: dict[K, list[Change]] = {}
    rest: dict[K, datetime] = {}
    for key, moment in moments.items():
        if known is not None and known_since is not None and _covers(known, known_since, moment - span):
            found[key] = [c for c in known if moment - span <= c.time <= moment]
        else:
            rest[key] = moment
    if rest:
        earliest, latest = min(rest.values()), max(rest.values())
        every = changes_between(earliest - span, latest + timedelta(microseconds=1))
        for key, moment in rest.items():
            if not _covers(every, earliest - span, moment - span):
                found[key] = changes_between(moment - span, moment + timedelta(microseconds=1))
                continue
            found[key] = [c for c in every if moment - span <= c.time <= moment][-MAX_CHANGES:]
    return found


def _covers(known: Sequence[Change], since: datetime, start: datetime) -> bool:
    """Whether changes read from ``since`` hold every change from ``start`` on: none was left out by the
    limit after ``start``."""
    if start < since:
        return False
    return len(known) < MAX_CHANGES or (bool(known) and known[0].time < start)
