"""Editing steps in admin: indented JSON in a box as tall as the steps, a syntax error with its line and
column, and "did you mean" for a wrong field or kind, from the schema check the API and admin share."""

from __future__ import annotations

import html
import json
import re

import pytest

from controlplane.audit import Actor
from deployments.models import Pipeline
from deployments.services import InvalidDeployment, pipeline_save
from deployments.steps import InvalidStep, validate_steps
from tests.deployments.conftest import echo

STEPS = [
    echo("one", "step one", rollback=echo("undo one", "undone")),
    {"name": "hook", "kind": "http", "url": "https://deploy.example/hook", "headers": {"X-Key": "${DEPLOY_KEY}"}},
]


def textarea(page: str) -> tuple[dict[str, str], str]:
    """(attributes, text) of the steps box."""
    match = re.search(r"<textarea([^>]*name=\"steps\"[^>]*)>(.*?)</textarea>", page, flags=re.DOTALL)
    attributes = dict(re.findall(r'(\w[\w-]*)="([^"]*)"', match.group(1)))
    return attributes, html.unescape(match.group(2)).lstrip("\n")  # Django's template starts with a newline


def assert_indented(text: str, steps: list) -> None:
    """The box holds ``steps``, two-space indented. Key order is the database's (PostgreSQL's jsonb
    orders keys its own way), so the text is compared with the same value indented, not with STEPS."""
    value = json.loads(text)
    assert value == steps
    assert text == json.dumps(value, indent=2, ensure_ascii=False)


def change_url(pipeline: Pipeline) -> str:
    return f"/admin/deployments/pipeline/{pipeline.pk}/change/"


@pytest.mark.django_db
def test_the_steps_are_shown_indented_in_a_monospace_box_as_tall_as_they_are(operator_client, environment):
    pipeline = environment(STEPS).pipeline
    page = operator_client.get(change_url(pipeline)).content.decode()
    attributes, text = textarea(page)
    assert_indented(text, STEPS)
    assert text.count("\n") > 20 and '\n    "kind": "command",\n' in text  # one field per line, indented
    assert int(attributes["rows"]) >= text.count("\n") + 1  # no scrolling inside the box
    assert "steps-json" in attributes["class"].split() and attributes["spellcheck"] == "false"
    # The monospace face comes from a stylesheet on the page (the policy allows no inline style).
    stylesheet = re.search(r'href="([^"]*admin-steps[^"]*\.css)"', page).group(1)
    css = b"".join(operator_client.get(stylesheet).streaming_content).decode()
    assert "textarea.steps-json" in css and "monospace" in css and "white-space: pre" in css


@pytest.mark.django_db
def test_a_recovery_plan_shows_its_steps_the_same_way(operator_client, environment):
    from deployments.models import RecoveryPlan

    plan = RecoveryPlan.objects.create(failure_type="application_failure", environment=environment(STEPS), steps=STEPS)
    page = operator_client.get(f"/admin/deployments/recoveryplan/{plan.pk}/change/").content.decode()
    assert_indented(textarea(page)[1], STEPS)


@pytest.mark.django_db
def test_a_new_pipeline_starts_with_an_empty_box_not_null(operator_client):
    assert textarea(operator_client.get("/admin/deployments/pipeline/add/").content.decode())[1] == ""


# (what the operator typed, line, column): each JSON mistake is reported where it is.
SYNTAX_ERRORS = [
    ('[\n  {\n    "name": "one",\n    "kind": "command"\n    "argv": ["true"]\n  }\n]', 5, 5),  # missing comma
    ('[\n  {"name": "one", "kind": "command", "argv": ["true"],}\n]', 2, 55),  # trailing comma
    ("[\n  {'name': 'one'}\n]", 2, 4),  # single quotes
    ('[\n  {"name": "one", "kind": "command", "argv": ["true"]}\n', 3, 1),  # unclosed list
    ('[{"name": "one"}] extra', 1, 19),  # text after the JSON
]


@pytest.mark.django_db
@pytest.mark.parametrize(("typed", "line", "column"), SYNTAX_ERRORS)
def test_a_json_syntax_error_names_its_line_and_column_and_keeps_the_text(
    operator_client, environment, typed, line, column
):
    pipeline = environment(STEPS).pipeline
    response = operator_client.post(change_url(pipeline), {"name": pipeline.name, "description": "", "steps": typed})
    assert response.status_code == 200
    page = response.content.decode()
    assert re.search(rf"Not valid JSON: [^<]+ at line {line}, column {column}\.", html.unescape(page)), page
    assert textarea(page)[1] == typed  # shown again as typed, so the line and column point into it
    pipeline.refresh_from_db()
    assert pipeline.steps == STEPS


# (a step with one mistake, the field the error names, the suggestion): borrowed names and typos.
WRONG_FIELDS = [
    ({"name": "a", "kind": "command", "command": ["true"]}, "steps[0].command", "did you mean argv?"),
    ({"name": "a", "kind": "command", "cmd": ["true"]}, "steps[0].cmd", "did you mean argv?"),
    ({"name": "a", "kind": "command", "argvs": ["true"]}, "steps[0].argvs", "did you mean argv?"),
    ({"name": "a", "kind": "command", "argv": ["true"], "workdir": "/srv"}, "steps[0].workdir", "did you mean cwd?"),
    ({"name": "a", "kind": "command", "argv": ["x"], "environment": {}}, "steps[0].environment", "did you mean env?"),
    ({"name": "a", "kind": "http", "uri": "https://x.example"}, "steps[0].uri", "did you mean url?"),
    ({"name": "a", "kind": "http", "url": "https://x.example", "headrs": {}}, "steps[0].headrs",
     "did you mean headers?"),
    ({"name": "a", "kind": "http", "url": "https://x.example", "status_code": 200}, "steps[0].status_code",
     "did you mean expected_status?"),
    ({"name": "a", "kind": "wait", "duration": 5}, "steps[0].duration", "did you mean seconds?"),
    ({"name": "a", "kind": "wait", "seconds": 5, "timeout_s": 9}, "steps[0].timeout_s", "did you mean timeout?"),
    ({"name": "a", "kind": "wait", "seconds": 5, "rolback": {}}, "steps[0].rolback", "did you mean rollback?"),
    ({"name": "a", "kind": "shell", "argv": ["true"]}, "steps[0].kind", "did you mean command?"),
    ({"name": "a", "kind": "comand", "argv": ["true"]}, "steps[0].kind", "did you mean command?"),
    ({"name": "a", "kind": "webhook", "url": "https://x.example"}, "steps[0].kind", "did you mean http?"),
    ({"name": "a", "kind": "wait", "seconds": 1, "rollback": {"name": "b", "kind": "command", "command": ["x"]}},
     "steps[0].rollback.command", "did you mean argv?"),
]  # fmt: skip


@pytest.mark.parametrize(("step", "field", "hint"), WRONG_FIELDS)
def test_a_wrong_field_or_kind_suggests_the_right_one(step, field, hint):
    with pytest.raises(InvalidStep) as raised:
        validate_steps([step])
    assert raised.value.field == field and raised.value.message.endswith(hint), str(raised.value)


@pytest.mark.parametrize(
    "step",
    [
        {"name": "a", "kind": "command", "argv": ["true"], "zzz": 1},  # nothing close
        {"name": "a", "kind": "http", "url": "https://x.example", "command": ["x"]},  # argv is no http field
        {"name": "a", "kind": "command", "argv": ["true"], "command": ["x"]},  # argv is there already
        {"name": "a", "kind": "teleport"},
        {"name": "a", "kind": ["command"]},  # not even a string
    ],
)
def test_no_suggestion_when_nothing_fits(step):
    with pytest.raises(InvalidStep) as raised:
        validate_steps([step])
    assert "did you mean" not in str(raised.value)


@pytest.mark.django_db
def test_the_service_and_the_admin_say_the_same(operator_client, environment):
    wrong = [{"name": "a", "kind": "command", "command": ["true"]}]
    with pytest.raises(InvalidDeployment, match=re.escape("steps[0].command: not a field of a command step; did you")):
        pipeline_save(name="x", steps=wrong, actor=Actor.system("tests"))
    pipeline = environment(STEPS).pipeline
    response = operator_client.post(
        change_url(pipeline), {"name": pipeline.name, "description": "", "steps": json.dumps(wrong)}
    )
    page = html.unescape(response.content.decode())
    assert response.status_code == 200
    assert "steps[0].command: not a field of a command step; did you mean argv?" in page
    assert textarea(page)[1] == json.dumps(wrong, indent=2)  # valid JSON comes back indented
    pipeline.refresh_from_db()
    assert pipeline.steps == STEPS
