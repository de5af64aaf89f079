"""Evaluation counts per flag, environment and hour, and the Unleash SDKs' registrations.

OFREP's evaluations are counted in this process (``count``: a dict under a lock, no write per request)
and added to the hourly ``FlagUsage`` rows by the process's flush thread every ``FLAG_USAGE_FLUSH_SECONDS``
(and at exit), as the request metrics are; a database that is down keeps them for the next flush.

``sdk_register`` and ``usage_record`` are the one write path of ``SdkInstance`` and ``FlagUsage``
(``POST /api/client/register`` and ``/api/client/metrics``, and the frontend SDKs' same two under
``/api/frontend/client/``). Each checks the whole body first (``UsageError`` names the field), then writes
in one transaction: a refused body stores nothing. Counts are added to the hour the SDK's bucket started
in; flags the environment does not have are left out (an SDK cannot make rows by naming flags).
Nothing here is an operator's change, so nothing is audited.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import close_old_connections, transaction
from django.db.models import F
from django.utils import timezone

from controlplane.errors import InvalidInput
from controlplane.models import Environment
from flags.models import FlagUsage, SdkInstance

logger = logging.getLogger(__name__)
MAX_NAME = 200
# The metrics paths take a token that ships in browsers (flags:frontend): what one posts is bounded, so
# nobody can write rows in the future (beyond retention) or grow a row's variants without end.
MAX_BUCKET_AGE = timedelta(days=1)
MAX_VARIANTS = 50
MAX_COUNT = 2**53  # what a JavaScript SDK can count exactly


class UsageError(InvalidInput):
    """A register or metrics body that cannot be used (400, naming the field)."""

    status = 400


@dataclass(frozen=True)
class Registration:
    app_name: str
    instance_id: str
    sdk_version: str
    strategies: list[str]
    interval_ms: int | None
    started: datetime | None


@dataclass(frozen=True)
class Counts:
    yes: int
    no: int
    variants: dict[str, int]


def _text(data: Mapping[str, Any], key: str, *, required: bool = False, default: str = "") -> str:
    value = data.get(key)
    if value is None or value == "":
        if required:
            raise UsageError(key, f"{key} is required")
        return default
    if not isinstance(value, str):
        raise UsageError(key, f"{key} must be a string")
    if len(value) > MAX_NAME:
        raise UsageError(key, f"{key} is longer than {MAX_NAME}")
    return value


def _when(value: Any, where: str) -> datetime:
    if not isinstance(value, str):
        raise UsageError(where, f"{where} must be an ISO 8601 date and time")
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(where, f"{value!r} is not an ISO 8601 date and time") from None
    return moment if moment.tzinfo is not None else timezone.make_aware(moment, UTC)


def _count(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_COUNT:
        raise UsageError(where, f"{where} must be a whole number from 0 to {MAX_COUNT}")
    return value


def parse_registration(data: Mapping[str, Any]) -> Registration:
    strategies = data.get("strategies") or []
    if not isinstance(strategies, list) or not all(isinstance(s, str) for s in strategies):
        raise UsageError("strategies", "strategies must be a list of strings")
    interval = data.get("interval")
    if interval is not None:
        interval = _count(interval, "interval")
    started = data.get("started")
    return Registration(
        app_name=_text(data, "appName", required=True),
        instance_id=_text(data, "instanceId", default="default"),
        sdk_version=_text(data, "sdkVersion"),
        strategies=[s[:MAX_NAME] for s in strategies[:100]],
        interval_ms=min(interval, 2**31 - 1) if interval is not None else None,
        started=_when(started, "started") if started is not None else None,
    )


def parse_metrics(data: Mapping[str, Any]) -> tuple[str, str, datetime, dict[str, Counts]]:
    """(app name, instance id, bucket start, counts by flag name) of a metrics body."""
    app_name = _text(data, "appName", required=True)
    instance_id = _text(data, "instanceId", default="default")
    bucket = data.get("bucket")
    if not isinstance(bucket, dict):
        raise UsageError("bucket", "bucket must be an object with start, stop and toggles")
    start = _when(bucket.get("start"), "bucket.start")
    _when(bucket.get("stop"), "bucket.stop")
    now = timezone.now()
    start = min(max(start, now - MAX_BUCKET_AGE), now)  # a skewed or forged clock counts as now (or a day ago)
    toggles = bucket.get("toggles")
    if not isinstance(toggles, dict):
        raise UsageError("bucket.toggles", "bucket.toggles must be an object of flag names")
    counts = {}
    for name, raw in toggles.items():
        where = f"bucket.toggles.{name}"
        if not isinstance(raw, dict):
            raise UsageError(where, f"{where} must be an object with yes, no and variants")
        variants = raw.get("variants") or {}
        if not isinstance(variants, dict):
            raise UsageError(f"{where}.variants", f"{where}.variants must be an object of counts")
        if len(variants) > MAX_VARIANTS or any(len(str(k)) > MAX_NAME for k in variants):
            raise UsageError(
                f"{where}.variants", f"{where}.variants: at most {MAX_VARIANTS} names of {MAX_NAME} characters"
            )
        counts[name] = Counts(
            yes=_count(raw.get("yes", 0), f"{where}.yes"),
            no=_count(raw.get("no", 0), f"{where}.no"),
            variants={str(k): _count(v, f"{where}.variants.{k}") for k, v in variants.items()},
        )
    return app_name, instance_id, start, counts


def _seen(environment: Environment, app_name: str, instance_id: str, **fields: Any) -> None:
    now = timezone.now()
    updated = SdkInstance.objects.filter(environment=environment, app_name=app_name, instance_id=instance_id).update(
        last_seen=now, **fields
    )
    if not updated:
        SdkInstance.objects.get_or_create(
            environment=environment,
            app_name=app_name,
            instance_id=instance_id,
            defaults={"first_seen": now, "last_seen": now, **fields},
        )


def sdk_register(*, environment: Environment, data: Mapping[str, Any]) -> Registration:
    """Record (or refresh) the SDK instance a register body announces."""
    reg = parse_registration(data)
    fields: dict[str, Any] = {"sdk_version": reg.sdk_version, "strategies": reg.strategies}
    if reg.interval_ms is not None:
        fields["interval_ms"] = reg.interval_ms
    if reg.started is not None:
        fields["started"] = reg.started
    with transaction.atomic():
        _seen(environment, reg.app_name, reg.instance_id, **fields)
    return reg


def _add(flag: str, environment: Environment, hour: datetime, yes: int, no: int, variants: Mapping[str, int]) -> None:
    """Add counts to the hour's row (made if missing), in the caller's transaction; race-safe."""
    # get_or_create takes the other process's row when both made it at once.
    row, _ = FlagUsage.objects.select_for_update().get_or_create(flag=flag, environment=environment, hour=hour)
    merged = dict(row.variants)
    for variant, n in variants.items():
        merged[variant] = merged.get(variant, 0) + n
    FlagUsage.objects.filter(pk=row.pk).update(yes=F("yes") + yes, no=F("no") + no, variants=merged)


def usage_record(*, environment: Environment, data: Mapping[str, Any], known: set[str] | frozenset[str]) -> int:
    """Add a metrics body's counts to its hour; returns how many flags were counted (of ``known``)."""
    app_name, instance_id, start, counts = parse_metrics(data)
    hour = start.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    counted = 0
    with transaction.atomic():
        _seen(environment, app_name, instance_id)
        for name in sorted(counts):  # a fixed order: two requests lock the same rows in the same order
            if name not in known:
                continue
            c = counts[name]
            _add(name, environment, hour, c.yes, c.no, c.variants)
            counted += 1
    return counted


# --- OFREP's evaluations, counted in process ---------------------------------------------------------

# (flag, environment name, hour as a timestamp) -> [yes, no, {variant: count}]
_Key = tuple[str, str, int]
_pending: dict[_Key, list[Any]] = {}
_unsaved: dict[_Key, list[Any]] = {}
_lock = threading.Lock()
_flusher_started = False
_at_exit_registered = False


def count(environment: str, answers: Iterable[tuple[str, bool, str | None]]) -> None:
    """Count evaluations answered in ``environment``: (flag, on, variant name or None) each."""
    hour = int(time.time()) // 3600 * 3600
    if not _flusher_started:
        _start_flusher()
    with _lock:
        for name, enabled, variant in answers:
            row = _pending.get((name, environment, hour))
            if row is None:
                row = _pending[(name, environment, hour)] = [0, 0, {}]
            row[0 if enabled else 1] += 1
            if variant is not None:
                row[2][variant] = row[2].get(variant, 0) + 1


def discard_pending() -> None:
    """Forget the counts not yet flushed (a test starting from none)."""
    with _lock:
        _pending.clear()
        _unsaved.clear()


def _merge(into: dict[_Key, list[Any]], rows: dict[_Key, list[Any]]) -> None:
    for key, (yes, no, variants) in rows.items():
        row = into.setdefault(key, [0, 0, {}])
        row[0] += yes
        row[1] += no
        for name, n in variants.items():
            row[2][name] = row[2].get(name, 0) + n


def flush() -> int:
    """Add this process's counts to the hourly rows; returns the rows written. Counts the database did
    not take (it is down) are kept for the next flush; an environment removed meanwhile drops its own."""
    with _lock:
        _merge(_unsaved, _pending)
        _pending.clear()
        batch = dict(_unsaved)
        _unsaved.clear()
    if not batch:
        return 0
    written: list[_Key] = []
    try:
        environments = {e.name: e for e in Environment.objects.filter(name__in={k[1] for k in batch})}
        for key in sorted(batch):
            name, environment_name, hour = key
            environment = environments.get(environment_name)
            if environment is not None:
                yes, no, variants = batch[key]
                with transaction.atomic():
                    _add(name, environment, datetime.fromtimestamp(hour, UTC), yes, no, variants)
            written.append(key)
    except Exception as exc:  # noqa: BLE001 - database down: kept, and added on the next flush
        logger.error("flag usage not stored, kept for the next flush: %s", exc)
        with _lock:
            _merge(_unsaved, {key: row for key, row in batch.items() if key not in written})
    return len(written)


def _flush_forever() -> None:
    while True:
        time.sleep(settings.FLAG_USAGE_FLUSH_SECONDS)
        try:
            flush()
        finally:
            close_old_connections()


def _start_flusher() -> None:
    """The process's flush thread, started by its first count (a gunicorn master counts none, so a
    worker forked from it loses no thread)."""
    global _flusher_started, _at_exit_registered
    with _lock:
        if _flusher_started:
            return
        _flusher_started = True
        if settings.FLAG_USAGE_FLUSH_SECONDS <= 0:
            return
        threading.Thread(target=_flush_forever, name="flag-usage-flush", daemon=True).start()
        if not _at_exit_registered:
            atexit.register(flush)
            os.register_at_fork(after_in_child=_forget_parent)
            _at_exit_registered = True


def _forget_parent() -> None:
    """In a forked child: no flush thread came along, the lock may have been held, the counts are the
    parent's."""
    global _lock, _flusher_started
    _lock = threading.Lock()
    _pending.clear()
    _unsaved.clear()
    _flusher_started = False
