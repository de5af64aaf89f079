"""A reader of the Prometheus text exposition format that parses only the families a signal needs.

A service's /metrics may carry thousands of series the control plane never looks at (process and
runtime gauges, size summaries, every other library's metrics). A general parser pays for each of them;
this one recognises a sample line's metric name first and parses the labels and value only when the name
belongs to a requested family, which is what keeps a scrape of 10,000 series cheap (bench/exposition.py).

What it accepts is the text format 0.0.4 as Prometheus and prometheus-client write it: `# HELP` and
`# TYPE` lines and other comments, blank lines, label values with the escapes \\\\, \\" and \\n, values
such as NaN, +Inf and -Inf, and an optional timestamp in milliseconds.

Garbage is an error, not a skipped line: a scrape that returns an HTML page or a truncated body must show
as a failed scrape of the service (with the line named), never as a service that went quiet. A line of a
requested family is checked entirely (labels, value, timestamp); a line of any other family only in its
metric name, since checking the rest would mean parsing it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

# The samples of a family named F are F itself and F with one of these endings (a histogram's buckets,
# sum and count, a summary's sum and count, a counter's _total). `_created` samples are left out on
# purpose: they hold a creation time, not a count, and nothing computed from a scrape uses them.
FAMILY_SUFFIXES = ("_bucket", "_sum", "_count", "_total")

_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL = re.compile(r'[ \t]*([a-zA-Z_][a-zA-Z0-9_]*)[ \t]*=[ \t]*"([^"\\]*(?:\\.[^"\\]*)*)"[ \t]*(?:,|$)')
_ESCAPE = re.compile(r'\\[\\n"]')
_UNESCAPED = {"\\\\": "\\", "\\n": "\n", '\\"': '"'}


class ExpositionError(ValueError):
    """The text is not the Prometheus exposition format; the message gives the line's number and the
    reason, never the line's text: the message is shown (admin, API, logs) and the text is whatever an
    endpoint answered, which may be an internal page's content (a source pointed at one would echo it).
    ``line`` is taken for the caller's own debugging and not kept."""

    def __init__(self, line_number: int, line: str, reason: str) -> None:
        super().__init__(f"line {line_number}: {reason}")
        self.line_number = line_number
        self.reason = reason


class Sample(NamedTuple):
    name: str
    labels: dict[str, str]
    value: float
    timestamp_ms: int | None = None


@dataclass
class Exposition:
    """The requested families found in one scrape: samples by family name, and the types declared."""

    samples: dict[str, list[Sample]] = field(default_factory=dict)
    types: dict[str, str] = field(default_factory=dict)

    def family(self, name: str) -> list[Sample]:
        return self.samples.get(name, [])


def _unescape(value: str) -> str:
    return _ESCAPE.sub(lambda match: _UNESCAPED[match.group(0)], value)


def _parse_labels(text: str) -> dict[str, str]:
    labels: dict[str, str] = {}
    position, end = 0, len(text)
    while position < end:
        match = _LABEL.match(text, position)
        if match is None:
            if text[position:].strip():
                raise ValueError("malformed labels")
            break
        name, value = match.group(1, 2)
        if "\\" in value:
            value = _unescape(value)
        if name in labels:
            raise ValueError("a label given twice")
        labels[name] = value
        position = match.end()
    return labels


def _parse_value(text: str) -> float:
    # float() also takes "1_000" and surrounding spaces, which the format does not.
    if "_" in text:
        raise ValueError("invalid value")
    try:
        return float(text)
    except ValueError:
        raise ValueError("invalid value") from None


def _parse_sample(name: str, rest: str) -> Sample:
    """`rest` is what follows the metric name: an optional {labels}, the value, an optional timestamp."""
    labels: dict[str, str] = {}
    stripped = rest.lstrip(" \t")
    if stripped.startswith("{"):
        # Values and timestamps hold no brace, so the last one closes the labels even when a label
        # value contains one.
        close = stripped.rfind("}")
        if close == -1:
            raise ValueError("labels not closed")
        labels = _parse_labels(stripped[1:close])
        stripped = stripped[close + 1 :]
    elif rest and rest[0] not in " \t":
        raise ValueError("invalid metric name")
    fields = stripped.split()
    if len(fields) == 1:
        return Sample(name, labels, _parse_value(fields[0]))
    if len(fields) == 2:
        try:
            timestamp = int(fields[1])
        except ValueError:
            raise ValueError("invalid timestamp") from None
        return Sample(name, labels, _parse_value(fields[0]), timestamp)
    raise ValueError("expected a value and an optional timestamp")


def _owners(families: Iterable[str]) -> dict[str, str]:
    """Sample name -> the requested family it belongs to; an exact name wins over a suffixed one."""
    owners: dict[str, str] = {}
    wanted = set(families)
    for family in wanted:
        if not _METRIC_NAME.fullmatch(family):
            raise ValueError(f"invalid metric family name {family!r}")
        for suffix in FAMILY_SUFFIXES:
            owners.setdefault(family + suffix, family)
    for family in wanted:
        owners[family] = family
    return owners


def read_families(text: str, families: Iterable[str]) -> Exposition:
    """Read the samples of `families` from an exposition; ExpositionError names the first bad line."""
    owners = _owners(families)
    result = Exposition()
    name_match = _METRIC_NAME.match
    for number, line in enumerate(text.split("\n"), 1):
        if not line:
            continue
        first = line[0]
        if first in " \t\r":
            line = line.strip()
            if not line:
                continue
            first = line[0]
        if first == "#":
            _read_comment(line, owners, result)
            continue
        match = name_match(line)
        if match is None:
            raise ExpositionError(number, line, "not a sample, comment or blank line")
        name = match.group()
        family = owners.get(name)
        rest = line[match.end() :]
        if family is None:
            if not rest or rest[0] not in "{ \t":
                raise ExpositionError(number, line, "not a sample, comment or blank line")
            continue
        try:
            sample = _parse_sample(name, rest)
        except ValueError as error:
            raise ExpositionError(number, line, str(error)) from None
        result.samples.setdefault(family, []).append(sample)
    return result


def _read_comment(line: str, owners: dict[str, str], result: Exposition) -> None:
    parts = line.split(None, 3)
    if len(parts) == 4 and parts[1] == "TYPE" and owners.get(parts[2]) == parts[2]:
        result.types[parts[2]] = parts[3].strip()
