"""Production deploys with the wingmanmatch pipeline and the shipped recovery plans act on it.

Where the shipped pipelines were made (ensure_defaults: make run, manage.py ensure_demo_environment), gives
production (the ground's) a deployments row with the wingmanmatch pipeline (health URL blank: set it in
admin) and rebinds each shipped recovery plan that is still as it
shipped (bound to demo, the demo's steps and runbook) to production with the product's steps. A plan an
operator changed is left alone. A database without the wingmanmatch pipeline is left as it is:
ensure_defaults makes all of it, on production, when it first runs. The steps are frozen here: what later releases ship does not change what
this migration did. demo keeps its pipeline, for the local demo.
"""

from django.db import migrations

DEMO_PRODUCT_ENV = {"DEMO_PRODUCT_DIR": "{var_dir}/demo-product"}

# The plans as shipped before: bound to demo, running demo commands.
SHIPPED = {
    "application_failure": {
        "steps": [
            {
                "name": "backend rollback",
                "kind": "command",
                "argv": ["{python}", "-m", "deployments.demo", "backend-rollback", "{version}"],
                "env": {"DEMO_PRODUCT_DIR": "{var_dir}/demo-product"},
            },
            {
                "name": "frontend rollback",
                "kind": "command",
                "argv": ["{python}", "-m", "deployments.demo", "frontend-rollback", "{version}"],
            },
            {"name": "health validation", "kind": "health_gate", "checks": "ready", "interval": 1, "timeout": 30},
        ],
        "runbook": "1. Roll the backend and the frontend back to the previous release.\n"
        "2. Check /health and the error rate on the dashboard.\n"
        "3. Tell #ops what failed and open an incident.",
    },
    "database_failure": {
        "steps": [
            {"name": "backup what is left", "kind": "backup", "target": "default"},
            {"name": "health validation", "kind": "health_gate", "checks": "ready", "interval": 1, "timeout": 60},
        ],
        "runbook": "1. Back up what is left.\n"
        "2. Pick the newest verified backup on the Backups page.\n"
        "3. manage.py restore_backup ID --into <new database URL>; point "
        "DATABASE_URL at it.\n"
        "4. Validate health; keep the broken database for the post-mortem.",
    },
    "feature_flag_failure": {
        "steps": [
            {"name": "new features off", "kind": "flags", "set": {"demo_release_banner": {"enabled": False}}},
            {"name": "health validation", "kind": "health_gate", "checks": "ready", "interval": 1, "timeout": 30},
        ],
        "runbook": "1. Turn the flags of the last release off (Flags page).\n"
        "2. Watch the error rate fall.\n"
        "3. Fix forward, then roll the flags out again in steps.",
    },
}

PRODUCTION_PLANS = {
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
        "runbook": "1. Roll the backend (Render) and the frontend (Vercel) back to their "
        "previous deploys.\n"
        "2. Check production's health URL and the WingmanMatch service's error "
        "rate on the dashboard.\n"
        "3. Tell #ops what failed and open an incident.",
    },
    "database_failure": {
        "steps": [
            {"name": "backup what is left", "kind": "backup", "target": "wingmanmatch"},
            {"name": "health validation", "kind": "health_gate", "interval": 5, "timeout": 300},
        ],
        "runbook": "1. Back up what is left (target wingmanmatch).\n"
        "2. Pick the newest verified wingmanmatch backup on the Backups page.\n"
        "3. manage.py restore_backup ID --into <new database URL>; point "
        "WINGMANMATCH_DATABASE_URL (Render's DATABASE_URL) at it and redeploy the "
        "backend.\n"
        "4. Validate health; keep the broken database for the post-mortem.",
    },
    "feature_flag_failure": {
        "steps": [
            {
                "name": "new features off",
                "kind": "flags",
                "set": {
                    "matching_v2_algorithm": {"enabled": False},
                    "ai_coach_streaming": {"enabled": False},
                    "weekly_progress_digest": {"enabled": False},
                },
            },
            {"name": "health validation", "kind": "health_gate", "interval": 5, "timeout": 300},
        ],
        "runbook": "1. The features being rolled out (matching_v2_algorithm, "
        "ai_coach_streaming, weekly_progress_digest) are off; turn off any "
        "other flag of the last release on the Flags page.\n"
        "2. Watch the error rate fall.\n"
        "3. Fix forward, then roll the flags out again in steps.",
    },
}


def _without_demo_product_env(steps):
    """The demo steps as shipped before their backend steps recorded the version for the demo product."""
    if isinstance(steps, list):
        return [_without_demo_product_env(step) for step in steps]
    if isinstance(steps, dict):
        return {
            key: _without_demo_product_env(value)
            for key, value in steps.items()
            if not (key == "env" and value == DEMO_PRODUCT_ENV)
        }
    return steps


def as_shipped(plan):
    shipped = SHIPPED.get(plan.failure_type)
    return (
        shipped is not None
        and plan.environment.name == "demo"
        and plan.runbook == shipped["runbook"]
        and plan.steps in (shipped["steps"], _without_demo_product_env(shipped["steps"]))
    )


def production_and_plans(apps, schema_editor):
    ground_model = apps.get_model("controlplane", "Environment")
    pipeline_model = apps.get_model("deployments", "Pipeline")
    target_model = apps.get_model("deployments", "Environment")
    plan_model = apps.get_model("deployments", "RecoveryPlan")
    ground, _ = ground_model.objects.get_or_create(name="production", defaults={"production": True, "position": 30})
    pipeline = pipeline_model.objects.filter(name="wingmanmatch").first()
    if pipeline is None:
        # A database ensure_defaults never filled (a fresh one): it makes production's row and the plans
        # itself, on production, when it first runs (make run, manage.py ensure_demo_environment).
        return
    production = target_model.objects.filter(environment=ground).first()
    if production is None:
        production = target_model.objects.create(environment=ground, name=ground.name, pipeline=pipeline)
    for plan in plan_model.objects.select_related("environment"):
        if as_shipped(plan):
            shipped = PRODUCTION_PLANS[plan.failure_type]
            plan.environment = production
            plan.steps = shipped["steps"]
            plan.runbook = shipped["runbook"]
            plan.save(update_fields=["environment", "steps", "runbook"])


def plans_back_to_demo(apps, schema_editor):
    """Plans still as this migration left them go back to demo as they were; production's row stays."""
    target_model = apps.get_model("deployments", "Environment")
    plan_model = apps.get_model("deployments", "RecoveryPlan")
    demo = target_model.objects.filter(name="demo").first()
    if demo is None:
        return
    for plan in plan_model.objects.select_related("environment"):
        shipped = PRODUCTION_PLANS.get(plan.failure_type)
        if shipped and plan.environment.name == "production" and plan.steps == shipped["steps"]:
            plan.environment = demo
            plan.steps = SHIPPED[plan.failure_type]["steps"]
            plan.runbook = SHIPPED[plan.failure_type]["runbook"]
            plan.save(update_fields=["environment", "steps", "runbook"])


class Migration(migrations.Migration):
    dependencies = [
        ("controlplane", "0002_environments"),
        ("deployments", "0006_environment_required"),
    ]

    operations = [
        migrations.RunPython(production_and_plans, plans_back_to_demo),
    ]
