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


def restore_drills() -> Item:
    """Every recovery plan drilled on a schedule passed a drill within it, and its latest drill passed."""
    from django.db import DatabaseError

    from backups.selectors import drills_readiness

    try:
        plans = drills_readiness()
    except DatabaseError as exc:
        return unreadable("restore_drills", "restore drills", exc)
    if not plans:
        # Nothing to report yet: a fresh install has no product database to drill against. Once a plan
        # names a drill target, an overdue or failed drill warns or fails below.
        return Item(
            "restore_drills",
            PASS,
            "no recovery plan is drilled yet: set a drill target on a recovery plan (admin, Deployments, "
            "Recovery plans) to rehearse its restore on a schedule",
        )
    failing = [f"{p.plan.name}: {'; '.join(p.problems)}" for p in plans if p.failing]
    if failing:
        return Item("restore_drills", FAIL, "; ".join(failing)[:300], "see the Backups page, fix and drill again")
    overdue = [f"{p.plan.name}: {'; '.join(p.problems)}" for p in plans if p.overdue]
    if overdue:
        return Item("restore_drills", WARN, "; ".join(overdue)[:300], "drill the plan from the Backups page")
    rtos = ", ".join(
        f"{p.plan.name} {p.last_passed.rto_ms / 1000:.1f} s"
        for p in plans
        if p.last_passed and p.last_passed.rto_ms is not None
    )
    return Item("restore_drills", PASS, f"{len(plans)} plan(s) drilled within their schedule (RTO achieved: {rtos})")


def backup_encryption() -> Item:
    """Backups are encrypted at rest (age) in production, and this machine holds the identity that decrypts them."""
    from django.conf import settings

    from backups import engines

    name = "backup_encryption"
    try:
        recipients = engines.parse_recipients(settings.BACKUP_AGE_RECIPIENTS)
    except engines.BackupError as exc:
        return Item(name, FAIL, str(exc), "give age public keys (age1…) in BACKUP_AGE_RECIPIENTS")
    if not recipients:
        if settings.PRODUCTION:
            return Item(
                name,
                WARN,
                "backups are not encrypted at rest: anyone who reads the backups storage reads every row",
                "set BACKUP_AGE_RECIPIENTS to an age public key (age-keygen) and BACKUP_AGE_IDENTITY_FILE",
            )
        return Item(name, PASS, "backups are not encrypted (required in production only)")
    if not settings.BACKUP_AGE_IDENTITY_FILE:
        return Item(
            name,
            WARN,
            f"backups are encrypted to {len(recipients)} recipient(s), but no identity is set to verify them",
            "set BACKUP_AGE_IDENTITY_FILE on the machines that verify and restore",
        )
    try:
        identities = engines.read_identities(settings.BACKUP_AGE_IDENTITY_FILE)
    except engines.BackupError as exc:
        return Item(name, FAIL, str(exc), "point BACKUP_AGE_IDENTITY_FILE at a readable age identity file")
    public = {str(identity.to_public()) for identity in identities}
    if not public & {str(recipient) for recipient in recipients}:
        return Item(
            name,
            FAIL,
            "no identity in BACKUP_AGE_IDENTITY_FILE matches a recipient in BACKUP_AGE_RECIPIENTS: "
            "new backups could not be verified",
            "use the identity whose public key is among the recipients",
        )
    return Item(name, PASS, f"backups are encrypted to {len(recipients)} recipient(s); the identity decrypts them")
