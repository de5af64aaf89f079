"""The shipped pipelines and recovery plans: the product's seven steps and its recovery on production, and
a harmless local demo."""

from __future__ import annotations

from typing import Any

from controlplane.audit import Actor

DEMO = "demo"
DEMO_FLAG = "demo_release_banner"


def _demo(action: str) -> list[str]:
    return ["{python}", "-m", "deployments.demo", action, "{version}"]


# Where the backend steps record the version the demo product (python -m demo_product) serves.
_DEMO_PRODUCT_ENV = {"DEMO_PRODUCT_DIR": "{var_dir}/demo-product"}


# The service production's analysis watches (Monitoring > Services; its scrape source or Prometheus).
PRODUCT_SERVICE = "wingmanmatch-backend"
# Deploys verify themselves: ten minutes of the backend's figures after the health validation; three
# breaches in a row (45 s) fail it and the completed steps roll back. A quiet hour with fewer than 100
# requests in the window cannot be judged: it passes rather than roll back a release nobody could judge
# (the alert rules keep watching it).
PRODUCT_ANALYSIS: dict[str, Any] = {
    "name": "post-deployment analysis",
    "kind": "analysis",
    "duration": 600,
    "interval": 15,
    "window": 300,
    "failure_limit": 3,
    "min_requests": 100,
    "on_inconclusive": "pass",
    "conditions": [
        {"service": PRODUCT_SERVICE, "signal": "error_ratio", "max": 0.01},
        {"service": PRODUCT_SERVICE, "signal": "p95", "max": 2.0},
        {"service": PRODUCT_SERVICE, "signal": "up", "min": 0.9},
    ],
}

# The demo product's service (deployments.demo_product.SERVICE, not imported: that module reads settings).
DEMO_SERVICE = "wingmanmatch-demo"
# About a minute, so that a flaky-* (5 % errors) or slow-* (p95 over 2 s) release of the demo product is
# caught and rolled back while you watch: two breaches in a row of a 60 s window, measured every 15 s.
# Until the demo product has served 50 requests in the window (just started) the analysis waits. Up is
# "most of the window's scrapes answered": a scrape that failed while make run was starting the product
# must not roll back the first deploy.
DEMO_ANALYSIS: dict[str, Any] = {
    "name": "post-deployment analysis",
    "kind": "analysis",
    "duration": 60,
    "interval": 15,
    "window": 60,
    "failure_limit": 2,
    "min_requests": 50,
    "on_inconclusive": "wait",
    # A production install's demo environment (ensure_demo_environment, no demo product): nothing to watch.
    "unmonitored": "skip",
    "conditions": [
        {"service": DEMO_SERVICE, "signal": "error_ratio", "max": 0.01},
        {"service": DEMO_SERVICE, "signal": "p95", "max": 2.0},
        {"service": DEMO_SERVICE, "signal": "up", "min": 0.5},
    ],
}

# The original report's seven steps, for WingmanMatch on Render (backend) and Vercel (frontend).
# Hook URLs are secret settings: list them in DEPLOY_SECRETS and set them in the environment.
PRODUCT_STEPS: list[dict[str, Any]] = [
    {"name": "pre-deployment health checks", "kind": "health_gate", "interval": 5, "timeout": 60},
    # Verified, so that the migration's backup gate (deployments.backup_gate) finds a restorable backup.
    {"name": "backup", "kind": "backup", "target": "wingmanmatch", "verify": True},
    {
        "name": "database migration",
        "kind": "migrate",
        "argv": ["alembic", "upgrade", "head"],
        "cwd": "${WINGMANMATCH_BACKEND_DIR}",
        "env": {"DATABASE_URL": "${WINGMANMATCH_DATABASE_URL}"},
        "timeout": 900,
        "rollback": {
            "name": "revert migration",
            "kind": "migrate",
            "argv": ["alembic", "downgrade", "-1"],
            "cwd": "${WINGMANMATCH_BACKEND_DIR}",
        },
    },
    {
        "name": "backend deploy",
        "kind": "http",
        "method": "POST",
        "url": "${RENDER_DEPLOY_HOOK_URL}",
        "expected_status": [200, 201, 202],
        "timeout": 30,
        "rollback": {
            "name": "backend rollback",
            "kind": "http",
            "method": "POST",
            "url": "${RENDER_ROLLBACK_HOOK_URL}",
        },
    },
    {
        "name": "frontend deploy",
        "kind": "http",
        "method": "POST",
        "url": "${VERCEL_DEPLOY_HOOK_URL}",
        "expected_status": [200, 201],
        "timeout": 30,
        "rollback": {
            "name": "frontend rollback",
            "kind": "http",
            "method": "POST",
            "url": "${VERCEL_ROLLBACK_HOOK_URL}",
        },
    },
    {
        "name": "feature-flag initialisation",
        "kind": "flags",
        "set": {"enhanced_monitoring": {"enabled": True}, "external_alerts": {"enabled": True}},
    },
    {"name": "post-deployment health validation", "kind": "health_gate", "interval": 5, "timeout": 300},
    PRODUCT_ANALYSIS,
]

DEMO_STEPS: list[dict[str, Any]] = [
    {"name": "pre-deployment health checks", "kind": "health_gate", "checks": "ready", "interval": 1, "timeout": 30},
    {"name": "backup", "kind": "backup", "target": "default", "verify": True},
    {
        "name": "database migration",
        "kind": "migrate",
        "argv": _demo("migrate"),
        "timeout": 60,
        "rollback": {"name": "revert migration", "kind": "command", "argv": _demo("migrate-rollback")},
    },
    {
        "name": "backend deploy",
        "kind": "command",
        "argv": _demo("backend"),
        "env": _DEMO_PRODUCT_ENV,
        "timeout": 60,
        "rollback": {
            "name": "backend rollback",
            "kind": "command",
            "argv": _demo("backend-rollback"),
            "env": _DEMO_PRODUCT_ENV,
        },
    },
    {
        "name": "frontend deploy",
        "kind": "command",
        "argv": _demo("frontend"),
        "timeout": 60,
        "rollback": {"name": "frontend rollback", "kind": "command", "argv": _demo("frontend-rollback")},
    },
    {
        "name": "feature-flag initialisation",
        "kind": "flags",
        "set": {DEMO_FLAG: {"enabled": True, "rollout_percent": 100}},
        "rollback": {"name": "flags back", "kind": "flags", "set": {DEMO_FLAG: {"enabled": False}}},
    },
    {
        "name": "post-deployment health validation",
        "kind": "health_gate",
        "checks": "ready",
        "interval": 1,
        "timeout": 30,
    },
    DEMO_ANALYSIS,
]

# What the plans shipped as before they acted on production: bound to demo, running demo commands. The
# migration that rebinds them (deployments 0007) rebinds a plan only while it is still one of these.
DEMO_RECOVERY_PLANS: dict[str, dict[str, Any]] = {
    "application_failure": {
        "steps": [
            {
                "name": "backend rollback",
                "kind": "command",
                "argv": _demo("backend-rollback"),
                "env": _DEMO_PRODUCT_ENV,
            },
            {"name": "frontend rollback", "kind": "command", "argv": _demo("frontend-rollback")},
            {"name": "health validation", "kind": "health_gate", "checks": "ready", "interval": 1, "timeout": 30},
        ],
        "runbook": "1. Roll the backend and the frontend back to the previous release.\n"
        "2. Check /health and the error rate on the dashboard.\n3. Tell #ops what failed and open an incident.",
    },
    "database_failure": {
        "steps": [
            {"name": "backup what is left", "kind": "backup", "target": "default"},
            {"name": "health validation", "kind": "health_gate", "checks": "ready", "interval": 1, "timeout": 60},
        ],
        "runbook": "1. Back up what is left.\n2. Pick the newest verified backup on the Backups page.\n"
        "3. manage.py restore_backup ID --into <new database URL>; point DATABASE_URL at it.\n"
        "4. Validate health; keep the broken database for the post-mortem.",
    },
    "feature_flag_failure": {
        "steps": [
            {"name": "new features off", "kind": "flags", "set": {DEMO_FLAG: {"enabled": False}}},
            {"name": "health validation", "kind": "health_gate", "checks": "ready", "interval": 1, "timeout": 30},
        ],
        "runbook": "1. Turn the flags of the last release off (Flags page).\n2. Watch the error rate fall.\n"
        "3. Fix forward, then roll the flags out again in steps.",
    },
}

PRODUCTION = "production"
PRODUCT_PIPELINE = "wingmanmatch"
# The product's features still being rolled out (partial percentages in flags/fixtures/wingmanmatch.json):
# the first suspects when a release misbehaves, and safe to switch off (each has a fallback).
PRODUCT_NEW_FEATURES = ["matching_v2_algorithm", "ai_coach_streaming", "weekly_progress_digest"]

# The shipped plans act on production with the product's own tools: Render's and Vercel's rollback hooks
# (the same secret settings as the wingmanmatch pipeline's rollbacks), the wingmanmatch backup target and
# production's health URL (the environment's, which the pipeline's health gates poll too).
RECOVERY_PLANS: dict[str, dict[str, Any]] = {
    "application_failure": {
        "steps": [
            {
                "name": "backend rollback",
                "kind": "http",
                "method": "POST",
                "url": "${RENDER_ROLLBACK_HOOK_URL}",
                "expected_status": [200, 201, 202],
                "timeout": 30,
            },
            {
                "name": "frontend rollback",
                "kind": "http",
                "method": "POST",
                "url": "${VERCEL_ROLLBACK_HOOK_URL}",
                "expected_status": [200, 201],
                "timeout": 30,
            },
            {"name": "health validation", "kind": "health_gate", "interval": 5, "timeout": 300},
        ],
        "runbook": "1. Roll the backend (Render) and the frontend (Vercel) back to their previous deploys.\n"
        "2. Check production's health URL and the WingmanMatch service's error rate on the dashboard.\n"
        "3. Tell #ops what failed and open an incident.",
    },
    "database_failure": {
        "steps": [
            {"name": "backup what is left", "kind": "backup", "target": "wingmanmatch"},
            {"name": "health validation", "kind": "health_gate", "interval": 5, "timeout": 300},
        ],
        "runbook": "1. Back up what is left (target wingmanmatch).\n"
        "2. Pick the newest verified wingmanmatch backup on the Backups page.\n"
        "3. manage.py restore_backup ID --into <new database URL>; point WINGMANMATCH_DATABASE_URL (Render's "
        "DATABASE_URL) at it and redeploy the backend.\n"
        "4. Validate health; keep the broken database for the post-mortem.",
    },
    "feature_flag_failure": {
        "steps": [
            {
                "name": "new features off",
                "kind": "flags",
                "set": {name: {"enabled": False} for name in PRODUCT_NEW_FEATURES},
            },
            {"name": "health validation", "kind": "health_gate", "interval": 5, "timeout": 300},
        ],
        "runbook": "1. The features being rolled out (" + ", ".join(PRODUCT_NEW_FEATURES) + ") are off; turn "
        "off any other flag of the last release on the Flags page.\n2. Watch the error rate fall.\n"
        "3. Fix forward, then roll the flags out again in steps.",
    },
}


def ensure_defaults(*, actor: Actor | None = None) -> None:
    """Create what is missing: the product pipeline and production's deployments row, the demo pipeline
    and environment, and the recovery plans (on production). Never overwrites what an operator changed."""
    from controlplane.models import Environment as GroundEnvironment
    from deployments.models import Environment, Pipeline, RecoveryPlan
    from deployments.services import environment_save, pipeline_save
    from flags.models import Flag
    from flags.services import flag_create

    actor = actor or Actor.system("defaults")
    product = Pipeline.objects.filter(name=PRODUCT_PIPELINE).first()
    if product is None or product.steps in _earlier_forms(PRODUCT_STEPS):
        # New, or as an earlier release shipped it (before migrations were gated, before deploys verified
        # themselves): unchanged by an operator, so updated.
        product = pipeline_save(
            name=PRODUCT_PIPELINE,
            steps=PRODUCT_STEPS,
            description=product.description if product else "WingmanMatch: the seven steps, then an analysis",
            actor=actor,
        )
    # Seeded by the ground's migration; made again, as production, on a database emptied of it.
    GroundEnvironment.objects.ensure(PRODUCTION, production=True)
    production = Environment.objects.filter(name=PRODUCTION).first() or environment_save(
        name=PRODUCTION, pipeline=product, actor=actor
    )
    if not Flag.objects.filter(name=DEMO_FLAG).exists():
        flag_create(
            data={"name": DEMO_FLAG, "description": "Set by the demo pipeline.", "owner": "platform"}, actor=actor
        )
    demo = Pipeline.objects.filter(name=DEMO).first()
    if demo is None or (demo.steps != DEMO_STEPS and demo.steps in _earlier_forms(DEMO_STEPS)):
        # New, or as an earlier release shipped it (before the demo product read its version, before its
        # backup was verified for the backup gate, before the analysis): unchanged by an operator, so it
        # may take the current steps.
        demo = pipeline_save(
            name=DEMO,
            steps=DEMO_STEPS,
            description=demo.description if demo else "Local and harmless; versions starting with bad- fail",
            actor=actor,
        )
    if not Environment.objects.filter(name=DEMO).exists():
        environment_save(name=DEMO, pipeline=demo, actor=actor)
    for failure_type, plan in RECOVERY_PLANS.items():
        RecoveryPlan.objects.get_or_create(
            failure_type=failure_type,
            defaults={"environment": production, "steps": plan["steps"], "runbook": plan["runbook"]},
        )


def _earlier_forms(steps: list[dict[str, Any]]) -> list[Any]:
    """``steps`` as earlier releases shipped them: without what each later release added (the demo
    product's environment, the backup gate's verified backup, the analysis), in every combination, so
    shipped steps an operator never changed are told from theirs."""
    forms: list[Any] = [steps]
    for earlier in (_without_analysis, _before_backup_gate, _without_demo_product_env):
        forms += [earlier(form) for form in forms]
    return [form for form in forms if form != steps]


def _without_analysis(steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [step for step in steps if step.get("kind") != "analysis"]


def _before_backup_gate(steps: list[Any]) -> list[Any]:
    """Shipped steps as they were before the backup gate: their backup steps did not verify."""
    return [
        {k: v for k, v in step.items() if not (k == "verify" and v is True and step.get("kind") == "backup")}
        if isinstance(step, dict)
        else step
        for step in steps
    ]


def _without_demo_product_env(steps: Any) -> Any:
    """The demo steps as shipped before their backend steps recorded the version for the demo product."""
    if isinstance(steps, list):
        return [_without_demo_product_env(step) for step in steps]
    if isinstance(steps, dict):
        return {
            key: _without_demo_product_env(value)
            for key, value in steps.items()
            if not (key == "env" and value == _DEMO_PRODUCT_ENV)
        }
    return steps
