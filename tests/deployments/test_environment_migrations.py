"""Upgrading a database from before environments lived in the ground: deployments' rows are linked to
the ground's by name, flags:read tokens move to production, production deploys with the wingmanmatch
pipeline, and the shipped recovery plans move to it only while unchanged."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from deployments.defaults import DEMO_RECOVERY_PLANS, RECOVERY_PLANS, _without_demo_product_env

BEFORE = [("deployments", "0003_deployment_dispatch"), ("controlplane", "0001_initial")]


def _migrate(targets):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)


def _latest():
    _migrate(MigrationExecutor(connection).loader.graph.leaf_nodes())


@pytest.mark.django_db(transaction=True)
def test_an_upgraded_database_links_environments_binds_tokens_and_moves_only_unchanged_plans():
    _migrate(BEFORE)
    try:
        old = MigrationExecutor(connection).loader.project_state(BEFORE).apps
        pipeline = old.get_model("deployments", "Pipeline")
        environment = old.get_model("deployments", "Environment")
        plan = old.get_model("deployments", "RecoveryPlan")
        deployment = old.get_model("deployments", "Deployment")
        token = old.get_model("controlplane", "ApiToken")
        pipeline.objects.create(
            name="wingmanmatch", steps=[{"name": "as an operator left it", "kind": "wait", "seconds": 1}]
        )
        demo_pipeline = pipeline.objects.create(name="demo", steps=[])
        demo = environment.objects.create(name="demo", pipeline=demo_pipeline)
        qa = environment.objects.create(name="qa", pipeline=demo_pipeline, health_url="http://127.0.0.1:9/health")
        old_deployment = deployment.objects.create(environment=qa, version="v1", requested_by="t", status="succeeded")
        shipped = DEMO_RECOVERY_PLANS
        plan.objects.create(failure_type="application_failure", environment=demo, **shipped["application_failure"])
        plan.objects.create(  # as shipped by the release before the demo product's env
            failure_type="database_failure",
            environment=demo,
            steps=_without_demo_product_env(shipped["database_failure"]["steps"]),
            runbook=shipped["database_failure"]["runbook"],
        )
        plan.objects.create(
            failure_type="feature_flag_failure",
            environment=demo,
            steps=shipped["feature_flag_failure"]["steps"],
            runbook="Our own runbook.",  # changed by an operator: stays as it is
        )
        reader = token.objects.create(name="app", prefix="cpt_a", token_hash="a" * 64, scopes=["flags:read"])
        both = token.objects.create(name="both", prefix="cpt_b", token_hash="b" * 64, scopes=["deploy", "flags:read"])
        deployer = token.objects.create(name="ci", prefix="cpt_c", token_hash="c" * 64, scopes=["deploy"])
    finally:
        _latest()

    from controlplane.models import ApiToken
    from controlplane.models import Environment as Ground
    from deployments.models import Deployment, Environment, RecoveryPlan

    grounds = list(Ground.objects.values_list("name", "production"))
    assert grounds == [
        ("development", False), ("staging", False), ("production", True), ("demo", False), ("qa", False),
    ]  # fmt: skip
    # The same rows, linked by name; their deployments, pipeline and health URL unchanged.
    assert Environment.objects.get(pk=qa.pk).environment == Ground.objects.get(name="qa")
    assert Environment.objects.get(pk=demo.pk).environment.name == "demo"
    assert Environment.objects.get(pk=qa.pk).health_url == "http://127.0.0.1:9/health"
    assert Deployment.objects.get(pk=old_deployment.pk).environment.name == "qa"
    # Production deploys with the wingmanmatch pipeline, the operator's steps kept.
    production = Environment.objects.get(name="production")
    assert production.environment.production and production.pipeline.name == "wingmanmatch"
    assert production.pipeline.steps[0]["name"] == "as an operator left it" and production.health_url == ""
    # The shipped plans move to production with the product's steps; the changed one stays on demo.
    plans = {p.failure_type: p for p in RecoveryPlan.objects.select_related("environment")}
    for moved in ("application_failure", "database_failure"):
        assert plans[moved].environment.name == "production"
        assert (plans[moved].steps, plans[moved].runbook) == (
            RECOVERY_PLANS[moved]["steps"], RECOVERY_PLANS[moved]["runbook"],
        )  # fmt: skip
    kept = plans["feature_flag_failure"]
    assert (kept.environment.name, kept.runbook) == ("demo", "Our own runbook.")
    assert kept.steps == DEMO_RECOVERY_PLANS["feature_flag_failure"]["steps"]
    # flags:read tokens read production; the others no environment.
    bound = dict(ApiToken.objects.values_list("name", "environment__name"))
    assert bound == {reader.name: "production", both.name: "production", deployer.name: None}
    call_command("makemigrations", "--check", "--dry-run", verbosity=0)


@pytest.mark.django_db
def test_a_fresh_database_has_the_three_environments_and_no_deployments_row_until_ensure_defaults():
    from controlplane.models import Environment as Ground
    from deployments.defaults import ensure_defaults
    from deployments.models import Environment, RecoveryPlan

    assert list(Ground.objects.values_list("name", flat=True)) == ["development", "staging", "production"]
    assert not Environment.objects.exists()
    ensure_defaults()
    assert Environment.objects.get(name="production").pipeline.name == "wingmanmatch"
    assert Environment.objects.get(name="demo").pipeline.name == "demo"  # the local demo stays
    assert set(RecoveryPlan.objects.values_list("environment__name", flat=True)) == {"production"}
    assert list(Ground.objects.values_list("name", flat=True)) == ["development", "staging", "production", "demo"]
