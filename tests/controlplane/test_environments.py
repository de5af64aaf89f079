"""The ground's list of environments: seeded, edited in admin (audited), never deleted while in use; a
flags:read token is bound to one, production by default, and its requests carry that environment."""

from __future__ import annotations

import io

import pytest
from django.core.management import CommandError, call_command
from django.test import RequestFactory

from controlplane.api import authenticate
from controlplane.audit import Actor
from controlplane.context import token_environment
from controlplane.models import ApiToken, AuditEvent, Environment
from controlplane.services import InvalidTokenRequest, api_token_create

pytestmark = pytest.mark.django_db
SYSTEM = Actor.system("tests")


def test_the_seeded_three_in_order_and_only_production_asks_for_confirmation():
    rows = list(Environment.objects.values_list("name", "production"))
    assert rows == [("development", False), ("staging", False), ("production", True)]


def test_the_admin_list_edits_environments_in_place_and_audits_each_change(operator_client):
    staging = Environment.objects.get(name="staging")
    rows = list(Environment.objects.order_by("position", "name"))
    form = {"form-TOTAL_FORMS": str(len(rows)), "form-INITIAL_FORMS": str(len(rows)), "_save": "Save"}
    for i, row in enumerate(rows):
        form |= {f"form-{i}-id": str(row.pk), f"form-{i}-description": row.description, f"form-{i}-position": "5"}
        if row.production or row.pk == staging.pk:  # staging now asks for confirmation too
            form[f"form-{i}-production"] = "on"
    response = operator_client.post("/admin/controlplane/environment/", form)
    assert response.status_code == 302, response.content.decode()[:2000]
    staging.refresh_from_db()
    assert staging.production and staging.position == 5
    event = AuditEvent.objects.filter(action="environment.change", object_id=str(staging.pk)).get()
    assert event.actor_label == "operator" and (event.before["production"], event.after["production"]) == (False, True)


def test_adding_one_is_audited_and_its_name_cannot_change_afterwards(operator_client):
    response = operator_client.post(
        "/admin/controlplane/environment/add/",
        {"name": "eu-west", "description": "Frankfurt", "position": "40"},
    )
    assert response.status_code == 302
    made = Environment.objects.get(name="eu-west")
    assert AuditEvent.objects.filter(action="environment.create", object_id=str(made.pk)).exists()
    operator_client.post(
        f"/admin/controlplane/environment/{made.pk}/change/",
        {"name": "renamed", "description": "Frankfurt", "position": "40"},
    )
    assert Environment.objects.filter(name="eu-west").exists() and not Environment.objects.filter(name="renamed")
    page = operator_client.get(f"/admin/controlplane/environment/{made.pk}/change/").content.decode()
    assert 'name="name"' not in page


def test_deleting_an_environment_in_use_is_refused_naming_what_uses_it(operator_client):
    production = Environment.objects.get(name="production")
    token, _ = api_token_create(name="app", scopes="flags:read", actor=SYSTEM)
    page = operator_client.post(f"/admin/controlplane/environment/{production.pk}/delete/", {"post": "yes"})
    html = page.content.decode()
    assert page.status_code == 200 and "Cannot delete environment" in html
    assert "would require deleting the following protected related objects" in html and "app (cpt_" in html
    selected = {"action": "delete_selected", "_selected_action": [production.pk], "post": "yes"}
    html = operator_client.post("/admin/controlplane/environment/", selected).content.decode()
    assert "would require deleting the following protected related objects" in html
    assert Environment.objects.filter(pk=production.pk).exists()
    assert not AuditEvent.objects.filter(action="environment.delete").exists()
    # One nobody uses goes, audited.
    development = Environment.objects.get(name="development")
    operator_client.post(f"/admin/controlplane/environment/{development.pk}/delete/", {"post": "yes"})
    assert not Environment.objects.filter(name="development").exists()
    assert AuditEvent.objects.filter(action="environment.delete", object_id=str(development.pk)).exists()


def test_deployments_environment_in_use_cannot_be_deleted(operator_client):
    from deployments.defaults import ensure_defaults

    ensure_defaults()
    demo = Environment.objects.get(name="demo")
    html = operator_client.post(f"/admin/controlplane/environment/{demo.pk}/delete/", {"post": "yes"}).content.decode()
    assert "Cannot delete environment" in html
    assert Environment.objects.filter(name="demo").exists()


def test_a_flags_read_token_reads_production_unless_told_otherwise():
    default, _ = api_token_create(name="app", scopes="flags:read", actor=SYSTEM)
    staging, _ = api_token_create(name="app-staging", scopes="flags:read", environment="staging", actor=SYSTEM)
    deployer, _ = api_token_create(name="ci", scopes="deploy", actor=SYSTEM)
    assert (default.environment.name, staging.environment.name, deployer.environment) == (
        "production", "staging", None,
    )  # fmt: skip
    event = AuditEvent.objects.get(action="api_token.create", object_id=str(staging.pk))
    assert event.after["environment"] == Environment.objects.get(name="staging").pk
    with pytest.raises(InvalidTokenRequest) as unknown:
        api_token_create(name="x", scopes="flags:read", environment="moon", actor=SYSTEM)
    assert unknown.value.field == "environment" and "no environment named 'moon'" in unknown.value.message
    with pytest.raises(InvalidTokenRequest) as unbound:
        api_token_create(name="x", scopes="deploy", environment="staging", actor=SYSTEM)
    assert unbound.value.message == "only a flags:read or flags:frontend token is bound to an environment"


def test_the_command_takes_an_environment():
    out, err = io.StringIO(), io.StringIO()
    call_command(
        "create_api_token", "sdk", "--scopes", "flags:read", "--environment", "staging", stdout=out, stderr=err
    )
    assert ApiToken.objects.get(name="sdk").environment.name == "staging"
    assert "in staging" in err.getvalue()
    with pytest.raises(CommandError, match="no environment named 'moon'"):
        call_command("create_api_token", "x", "--scopes", "flags:read", "--environment", "moon", stdout=out)


def test_the_token_admin_binds_a_flags_read_token(operator_client):
    response = operator_client.post(
        "/admin/controlplane/apitoken/add/", {"name": "sdk", "scopes": ["flags:read"], "environment": "staging"}
    )
    assert response.status_code == 200 and "cpt_" in response.content.decode()  # the token, shown once
    assert ApiToken.objects.get(name="sdk").environment.name == "staging"
    operator_client.post("/admin/controlplane/apitoken/add/", {"name": "plain", "scopes": ["flags:read"]})
    assert ApiToken.objects.get(name="plain").environment.name == "production"
    refused = operator_client.post(
        "/admin/controlplane/apitoken/add/", {"name": "ci", "scopes": ["deploy"], "environment": "staging"}
    )
    assert "only a flags:read or flags:frontend token is bound to an environment" in refused.content.decode()
    assert not ApiToken.objects.filter(name="ci").exists()


def test_a_request_carries_its_tokens_environment():
    _, raw = api_token_create(name="app", scopes="flags:read", environment="staging", actor=SYSTEM)
    _, deploy = api_token_create(name="ci", scopes="deploy", actor=SYSTEM)
    request = RequestFactory().get("/ofrep/v1/evaluate/flags", HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert authenticate(request, "flags:read").name == "app"
    assert token_environment(request) == "staging"
    other = RequestFactory().get("/api/deployment/status", HTTP_AUTHORIZATION=f"Bearer {deploy}")
    authenticate(other, "deploy")
    assert token_environment(other) is None
