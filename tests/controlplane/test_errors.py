"""The error vocabulary: every app's failure is an InvalidInput, NotFound or Conflict, raised by the real services."""

import pytest
from django import forms
from django.contrib import messages
from django.contrib.messages import get_messages
from django.contrib.messages.storage.fallback import FallbackStorage

from backups.services import AlreadyRunning, InvalidBackupTarget, backup_start, target_create
from controlplane.admin import ApiTokenCreateForm
from controlplane.audit import Actor
from controlplane.errors import Conflict, ControlPlaneError, Forbidden, InvalidInput, NotFound
from controlplane.forms import add_to_form, as_validation_error, report
from controlplane.services import InvalidTokenRequest, api_token_create
from deployments.models import DeploymentStatus
from deployments.services import (
    DeploymentLocked,
    InvalidDeployment,
    NoRecoveryPlan,
    NotCancellable,
    deployment_cancel,
    deployment_request,
    environment_save,
    pipeline_save,
    recovery_run,
)
from deployments.steps import InvalidStep, validate_steps
from flags.models import Flag
from flags.services import FlagNotFound, InvalidFlagDefinition, flag_create, flag_update

SYSTEM = Actor.system("tests")
WAIT = [{"name": "pause", "kind": "wait", "seconds": 0}]


def test_each_kind_has_its_status_and_code_and_keeps_the_builtin_its_callers_catch():
    cases = [
        (InvalidInput("a.b", "wrong"), 422, "invalid", ValueError),
        (NotFound("none"), 404, "not_found", LookupError),
        (Conflict("busy"), 409, "conflict", RuntimeError),
        (Forbidden("no"), 403, "forbidden", PermissionError),
    ]
    for error, status, code, builtin in cases:
        assert isinstance(error, ControlPlaneError) and isinstance(error, builtin)
        assert (error.status, error.code) == (status, code)
    assert (str(cases[0][0]), cases[0][0].field, cases[0][0].message) == ("a.b: wrong", "a.b", "wrong")
    assert (str(cases[1][0]), cases[1][0].field) == ("none", None)


def test_a_bad_flag_is_invalid_input_naming_the_flag_and_the_field(db):
    with pytest.raises(InvalidInput) as error:
        flag_create(data={"name": "ok_name", "rollout_percent": 101}, actor=SYSTEM)
    assert type(error.value) is InvalidFlagDefinition
    assert (error.value.status, error.value.code) == (422, "invalid")
    assert (error.value.field, error.value.flag) == ("rollout_percent", "ok_name")
    assert str(error.value) == "flag 'ok_name': rollout_percent: must be a whole number from 0 to 100"
    assert not Flag.objects.exists()


def test_a_missing_flag_is_not_found(db):
    with pytest.raises(NotFound) as error:
        flag_update(name="ghost", changes={"enabled": True}, actor=SYSTEM)
    assert type(error.value) is FlagNotFound
    assert (error.value.status, error.value.code, error.value.name) == (404, "not_found", "ghost")
    assert str(error.value) == "no flag named 'ghost'"


def test_a_wrong_step_keeps_its_path_down_to_the_deployment(db):
    steps = [*WAIT, {"name": "call", "kind": "http", "url": "ftp://x"}]
    with pytest.raises(InvalidInput) as error:
        validate_steps(steps)
    assert type(error.value) is InvalidStep and error.value.field == "steps[1].url"

    env = environment_save(name="prod", pipeline=pipeline_save(name="p", steps=WAIT, actor=SYSTEM), actor=SYSTEM)
    with pytest.raises(InvalidInput) as error:
        deployment_request(environment=env.name, version="v1", steps=steps, actor=SYSTEM)
    assert type(error.value) is InvalidDeployment
    assert error.value.field == "pipeline p: steps[1].url"
    assert str(error.value).startswith("pipeline p: steps[1].url: ")
    assert (error.value.status, error.value.code) == (422, "invalid")


def test_an_unknown_recovery_plan_is_not_found_and_still_bad_deployment_input(db):
    with pytest.raises(NotFound) as error:
        recovery_run(failure_type="meteor", actor=SYSTEM)
    assert type(error.value) is NoRecoveryPlan and isinstance(error.value, InvalidDeployment)
    assert (error.value.status, error.value.code, error.value.field) == (404, "not_found", "type")
    assert str(error.value) == "type: no recovery plan for 'meteor' (plans: none)"


def test_a_held_lock_and_a_finished_deployment_are_conflicts_with_their_own_codes(db):
    env = environment_save(name="prod", pipeline=pipeline_save(name="p", steps=WAIT, actor=SYSTEM), actor=SYSTEM)
    first = deployment_request(environment="prod", version="v1", actor=SYSTEM)
    with pytest.raises(Conflict) as error:
        deployment_request(environment="prod", version="v2", actor=SYSTEM)
    assert type(error.value) is DeploymentLocked
    assert (error.value.status, error.value.code) == (409, "locked")
    assert error.value.active == first
    assert error.value.extra == {"active": {"id": first.pk, "url": first.get_absolute_url()}}
    assert str(error.value) == f"prod is locked by deployment #{first.pk} (queued)"
    assert env.deployments.count() == 1

    assert deployment_cancel(deployment=first, actor=SYSTEM).status == DeploymentStatus.CANCELLED
    with pytest.raises(Conflict) as error:
        deployment_cancel(deployment=first, actor=SYSTEM)
    assert type(error.value) is NotCancellable
    assert (error.value.status, error.value.code) == (409, "not_cancellable")


def test_backup_targets_and_running_backups(db, monkeypatch):
    monkeypatch.setenv("ERRORS_TEST_DB", "sqlite:////nonexistent/app.sqlite3")
    with pytest.raises(InvalidInput) as error:
        target_create(data={"name": "shop", "url_env": "ERRORS_TEST_DB", "colour": "red"}, actor=SYSTEM)
    assert type(error.value) is InvalidBackupTarget
    assert (error.value.field, error.value.status) == ("colour", 422)

    target = target_create(data={"name": "shop", "url_env": "ERRORS_TEST_DB"}, actor=SYSTEM)
    backup_start(target=target, actor=SYSTEM)
    with pytest.raises(Conflict) as error:
        backup_start(target=target, actor=SYSTEM)
    assert type(error.value) is AlreadyRunning
    assert (error.value.status, error.value.code) == (409, "already_running")
    assert target.backups.count() == 1


def test_a_bad_token_request_is_invalid_input_naming_the_field(db):
    with pytest.raises(InvalidInput) as error:
        api_token_create(name="ci", scopes="flags:read", expires_in_days=0, actor=SYSTEM)
    assert type(error.value) is InvalidTokenRequest
    assert (error.value.field, error.value.status) == ("expires_in_days", 422)
    assert str(error.value) == "expires_in_days: must be between 1 and 3650"


# --- Shown on pages and admin screens ------------------------------------------------------------


class StepsForm(forms.Form):
    name = forms.CharField()
    steps = forms.JSONField()


def test_an_error_lands_on_the_form_field_its_path_starts_with():
    form = StepsForm(data={"name": "p", "steps": '[{"name": "a"}]'})
    assert form.is_valid()
    add_to_form(form, InvalidStep("steps[2].argv", "required: a non-empty list of strings"))
    add_to_form(form, InvalidInput("name", "is taken"))
    add_to_form(form, InvalidInput("body", "must be a JSON object"))
    assert form.errors == {
        "steps": ["steps[2].argv: required: a non-empty list of strings"],
        "name": ["is taken"],
        "__all__": ["body: must be a JSON object"],
    }
    assert not form.is_valid()


def test_a_field_check_refused_by_a_service_rule_keeps_the_path_and_code():
    error = as_validation_error(InvalidStep("steps[0].kind", "unknown kind 'shell'"))
    assert (error.messages, error.code) == (["steps[0].kind: unknown kind 'shell'"], "invalid")


def test_a_report_names_the_object_and_keeps_the_level(rf):
    request = rf.post("/")
    request.session = {}
    request._messages = FallbackStorage(request)
    report(request, Conflict("prod is locked by deployment #4 (running)"), about="prod")
    report(request, NotFound("no flag named 'x'"), level=messages.WARNING)
    assert [(m.level, m.message) for m in get_messages(request)] == [
        (messages.ERROR, "prod: prod is locked by deployment #4 (running)"),
        (messages.WARNING, "no flag named 'x'"),
    ]


# --- Rules declared once, used by the admin forms ------------------------------------------------


def test_the_admin_rollout_action_states_the_services_rule(operator_client):
    flag = flag_create(data={"name": "checkout", "rollout_percent": 10}, actor=SYSTEM)
    for typed in ("101", "-1", "ten"):
        response = operator_client.post(
            "/admin/flags/flag/",
            {"action": "set_rollout", "_selected_action": [flag.pk], "rollout_percent": typed},
        )
        assert f"The rollout percent must be a whole number from 0 to 100 (got &#x27;{typed}&#x27;)." in (
            response.content.decode()
        ), typed
    flag.refresh_from_db()
    assert flag.rollout_percent == 10


def test_the_token_form_applies_the_services_rules(operator):
    form = ApiTokenCreateForm(data={"name": "ci", "scopes": ["flags:read"], "expires_in_days": "3651"})
    assert form.errors == {"expires_in_days": ["Ensure this value is less than or equal to 3650."]}
    form = ApiTokenCreateForm(data={"name": "ci", "scopes": ["flags:read", "deploy"], "expires_in_days": "30"})
    assert form.is_valid(), form.errors
    assert form.cleaned_data["scopes"] == ["deploy", "flags:read"]  # as the service stores them
