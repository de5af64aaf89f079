"""An analysis step is checked before anything runs: a wrong field is refused naming it, and nothing is saved;
a dry run says what the step would measure."""

from __future__ import annotations

import pytest

from controlplane.audit import Actor
from deployments.defaults import DEMO_ANALYSIS, PRODUCT_ANALYSIS
from deployments.models import Pipeline
from deployments.services import InvalidDeployment, pipeline_save
from deployments.steps import describe, validate_steps

SYSTEM = Actor.system("tests")
GOOD = {"service": "backend", "signal": "error_ratio", "max": 0.01}


def step(**fields):
    return {"name": "verify", "kind": "analysis", "duration": 60, "conditions": [GOOD], **fields}


BAD = [
    ("no-duration", {"duration": None}, "steps[0].duration", "required: seconds"),
    ("duration-text", {"duration": "10m"}, "steps[0].duration", "required: seconds"),
    ("interval-zero", {"interval": 0}, "steps[0].interval", "seconds, from 0.1"),
    ("interval-over-duration", {"interval": 90}, "steps[0].interval", "at most the duration"),
    ("window-too-long", {"window": 86400}, "steps[0].window", "seconds, from 1 to 21600"),
    ("timeout-under-duration", {"timeout": 30}, "steps[0].timeout", "at least the duration"),
    ("failure-limit-zero", {"failure_limit": 0}, "steps[0].failure_limit", "a whole number from 1"),
    ("failure-limit-float", {"failure_limit": 2.5}, "steps[0].failure_limit", "a whole number from 1"),
    ("min-requests-negative", {"min_requests": -1}, "steps[0].min_requests", "a whole number from 0"),
    ("on-inconclusive", {"on_inconclusive": "retry"}, "steps[0].on_inconclusive", "one of fail, pass, wait"),
    ("no-conditions", {"conditions": []}, "steps[0].conditions", "required: a list"),
    ("step-field-alias", {"every": 15}, "steps[0].every", "did you mean interval?"),
    ("condition-not-object", {"conditions": ["p95 < 2"]}, "steps[0].conditions[0]", "must be a JSON object"),
    ("condition-two-kinds", {"conditions": [{**GOOD, "alerts": ["x"]}]}, "steps[0].conditions[0]", "one of signal"),
    ("condition-no-kind", {"conditions": [{"service": "backend", "max": 1}]}, "steps[0].conditions[0]", "one of"),
    ("unknown-signal", {"conditions": [{**GOOD, "signal": "p90"}]}, "steps[0].conditions[0].signal", "one of"),
    ("no-service", {"conditions": [{"signal": "p95", "max": 2}]}, "steps[0].conditions[0].service", "required"),
    ("ratio-as-percent", {"conditions": [{**GOOD, "max": 1.5}]}, "steps[0].conditions[0].max", "0.01 is 1 %"),
    (
        "no-bound",
        {"conditions": [{"service": "b", "signal": "p95"}]},
        "steps[0].conditions[0].max",
        "max, min or baseline",
    ),
    (
        "condition-field-alias",
        {"conditions": [{"service": "b", "signal": "p95", "threshold": 2}]},
        "steps[0].conditions[0].threshold",
        "did you mean max?",
    ),
    (
        "baseline-shape",
        {"conditions": [{**GOOD, "baseline": 0.01}]},
        "steps[0].conditions[0].baseline",
        '{"margin"',
    ),
    (
        "baseline-margin",
        {"conditions": [{**GOOD, "baseline": {"margin": -1}}]},
        "steps[0].conditions[0].baseline.margin",
        "0 or more",
    ),
    (
        "slo-without-max",
        {"conditions": [{"service": "b", "slo": "availability"}]},
        "steps[0].conditions[0].max",
        "highest burn rate",
    ),
    (
        "slo-min",
        {"conditions": [{"service": "b", "slo": "availability", "max": 2, "min": 1}]},
        "steps[0].conditions[0].min",
        "takes a max",
    ),
    ("alerts-empty", {"conditions": [{"alerts": []}]}, "steps[0].conditions[0].alerts", "non-empty list"),
    (
        "alerts-with-max",
        {"conditions": [{"alerts": ["down"], "max": 1}]},
        "steps[0].conditions[0].max",
        "only alerts and name",
    ),
]


@pytest.mark.django_db
@pytest.mark.parametrize(("fields", "field", "message"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_a_wrong_analysis_step_is_refused_naming_its_field_and_nothing_is_saved(fields, field, message):
    bad = {key: value for key, value in step(**fields).items() if value is not None}
    with pytest.raises(InvalidDeployment) as raised:
        pipeline_save(name="checked", steps=[bad], actor=SYSTEM)
    assert raised.value.field == field
    assert message in raised.value.message
    assert not Pipeline.objects.filter(name="checked").exists()


def test_the_shipped_analyses_are_valid_and_a_kind_alias_is_suggested():
    validate_steps([PRODUCT_ANALYSIS])
    validate_steps([DEMO_ANALYSIS])
    from deployments.steps import InvalidStep

    with pytest.raises(InvalidStep, match="did you mean analysis"):
        validate_steps([{**DEMO_ANALYSIS, "kind": "canary"}])


def test_a_dry_run_says_what_the_analysis_would_measure():
    from deployments.steps import Context

    ctx = Context({}, lambda text: None, lambda pid: None, None, "", "tests")  # type: ignore[arg-type]
    text = describe(
        step(
            interval=15,
            window=120,
            conditions=[
                {**GOOD, "baseline": {"margin": 0.005}},
                {"service": "backend", "signal": "up", "min": 0.9},
                {"service": "backend", "slo": "availability", "max": 6},
                {"alerts": ["backend down"]},
            ],
        ),
        ctx,
    )
    assert text == (
        "analyse for 60 s, every 15 s over a trailing 120 s window: backend error_ratio at most 0.01 and no worse "
        "than the previous release by more than 0.005; backend up at least 0.9; backend SLO availability burn "
        "rate at most 6x; none of the alert rules backend down firing; 3 breaches in a row fail it (and roll "
        "back); fewer than 50 requests is inconclusive: wait"
    )
