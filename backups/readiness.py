"""Backups' production readiness item: every target can be dumped from here and is verified."""

from __future__ import annotations

from controlplane.readiness import FAIL, PASS, WARN, Item, unreadable


def backup_targets() -> Item:
    """Every enabled backup target can be dumped from here, and has a verified backup within its RPO."""
    from django.db import DatabaseError

    from backups import engines
    from backups.selectors import all_readiness
    from backups.services import target_source

    try:
        targets = all_readiness()
    except DatabaseError as exc:
        return unreadable("backups", "backup targets", exc)
    if not targets:
        return Item("backups", FAIL, "no enabled backup target", "enable the target default in admin (Backups)")
    problems = []
    for readiness in targets:
        target = readiness.target
        try:
            if target.is_pitr:
                from backups.pitr import repository

                repository(target).validate()
                engines.pgbackrest_binary()
            source = target_source(target)
            if source.engine == "postgresql":
                engines.pg_tool("pg_dump")
                engines.pg_tool("pg_restore")
        except engines.BackupError as exc:
            return Item("backups", FAIL, f"target {target.name}: {exc}", "fix the target's URL variable or tools")
        problems += [f"{target.name}: {problem}" for problem in readiness.problems]
    if problems:
        return Item("backups", WARN, "; ".join(problems)[:300], "see the Backups page; run manage.py backup")
    return Item("backups", PASS, f"{len(targets)} target(s) with a verified backup within their RPO")
