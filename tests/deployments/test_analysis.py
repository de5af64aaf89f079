"""The ``analysis`` step run by the runner in-process against the demo product (demo_product/) on a free port:
a good release passes, a flaky or slow one fails and rolls back, inconclusive windows do what the step
says, a baseline is the previous release's own figures, a cancel stops the step at once. Short durations
and intervals here; the one end-to-end run with a real worker is in test_analysis_worker.py."""

from __future__ import annotations

import sys
import threading
from datetime import timedelta

import pytest
from django.utils import timezone

from controlplane.audit import Actor
from deployments.models import (
    AnalysisMeasurement,
    Deployment,
    DeploymentStatus,
    LogLine,
    Phase,
    StepRun,
    StepStatus,
)
from deployments.runner import run
from deployments.services import deployment_cancel, deployment_request
from monitoring.models import MetricSource, Service, ServiceLevelObjective, SourceKind
from monitoring.scrape import scrape_sources, scrape_sources_run
from tests.deployments.analysis_product import Product

pytestmark = [pytest.mark.django_db(transaction=True)]
SYSTEM = Actor.system("tests")
SERVICE = "demo-backend"


@pytest.fixture
def product(tmp_path):
    """The demo product serving v0, registered as SERVICE with a scrape source, scraped once (so the
    step's first scrape has a round to pair with)."""
    served = Product(tmp_path / "demo-product")
    service = Service.objects.create(name=SERVICE)
    MetricSource.objects.create(
        service=service, kind=SourceKind.SCRAPE, urls=served.metrics_url, interval_seconds=15, timeout_seconds=5
    )
    scrape()
    yield served
    served.close()


def scrape() -> None:
    scrape_sources_run(list(scrape_sources(service=SERVICE)))


def analysis(*conditions, **fields):
    step = {
        "name": "analysis",
        "kind": "analysis",
        "duration": 2,
        "interval": 0.5,
        "window": 60,
        "failure_limit": 2,
        "min_requests": 50,
        "on_inconclusive": "fail",
        "conditions": list(conditions)
        or [
            {"service": SERVICE, "signal": "error_ratio", "max": 0.01},
            {"service": SERVICE, "signal": "p95", "max": 2.0},
            {"service": SERVICE, "signal": "up", "min": 0.75},
        ],
    }
    step.update(fields)
    return step


def backend(directory) -> dict:
    """The demo pipeline's backend step (and its rollback), recording versions where ``product`` reads them."""
    env = {"DEMO_PRODUCT_DIR": str(directory)}
    return {
        "name": "backend deploy",
        "kind": "command",
        "argv": [sys.executable, "-m", "deployments.demo", "backend", "{version}"],
        "env": env,
        "rollback": {
            "name": "backend rollback",
            "kind": "command",
            "argv": [sys.executable, "-m", "deployments.demo", "backend-rollback", "{version}"],
            "env": env,
        },
    }


def deploy(version: str) -> Deployment:
    deployment = deployment_request(environment="test", version=version, actor=SYSTEM)
    run(deployment.pk)
    deployment.refresh_from_db()
    return deployment


def measurements(deployment: Deployment, phase: str = Phase.FORWARD) -> list[AnalysisMeasurement]:
    return list(
        AnalysisMeasurement.objects.filter(step_run__deployment=deployment, step_run__phase=phase).order_by("at", "id")
    )


def analysis_run(deployment: Deployment) -> StepRun:
    return StepRun.objects.get(deployment=deployment, kind="analysis", phase=Phase.FORWARD)


def test_a_good_release_passes_its_analysis_and_every_measurement_is_stored(product, environment, tmp_path):
    environment([backend(product.releases.parent), analysis()])
    product.start_traffic()
    deployment = deploy("v7")
    assert deployment.status == DeploymentStatus.SUCCEEDED, deployment.error
    assert product.app.version == "v7"
    found = measurements(deployment)
    # Rounds at 0.5, 1, 1.5 and 2 s, each measuring the three conditions.
    assert len(found) == 4 * 3
    assert {m.verdict for m in found} == {"pass"}
    assert {m.label for m in found} == {f"{SERVICE} error_ratio", f"{SERVICE} p95", f"{SERVICE} up"}
    errors = [m for m in found if m.label.endswith("error_ratio")]
    assert all(m.threshold == 0.01 and m.value is not None and m.value <= 0.01 for m in errors)
    assert all(m.requests >= 50 for m in errors)
    output = analysis_run(deployment).output
    assert "round 4 at" in output and "passed: 4 rounds judged" in output


@pytest.mark.parametrize(
    ("version", "breached"),
    [("flaky-3", f"{SERVICE} error_ratio breached 2 times in a row"), ("slow-4", f"{SERVICE} p95 breached 2 times")],
    ids=["flaky", "slow"],
)
def test_a_misbehaving_release_fails_its_analysis_and_rolls_back(product, environment, version, breached):
    environment([backend(product.releases.parent), analysis(duration=30)])
    product.start_traffic()
    deployment = deploy(version)
    assert deployment.status == DeploymentStatus.ROLLED_BACK
    assert f"step analysis failed: {breached}" in deployment.error
    step = analysis_run(deployment)
    assert step.status == StepStatus.FAILED
    # The rollback ran: the product serves the release before it again.
    assert product.releases.read_text().split() == []
    rollback = StepRun.objects.get(deployment=deployment, phase=Phase.ROLLBACK)
    assert (rollback.name, rollback.status) == ("backend rollback", StepStatus.SUCCEEDED)
    failed = [m for m in measurements(deployment) if m.verdict == "fail"]
    assert len(failed) >= 2 and all(m.value > m.threshold for m in failed)
    log = list(LogLine.objects.filter(deployment=deployment).values_list("message", flat=True))
    assert any(breached in line for line in log), log  # the reason, in the deployment's log


@pytest.mark.parametrize(
    ("policy", "status", "needle"),
    [
        ("fail", DeploymentStatus.FAILED, "could not be judged 2 times in a row"),
        ("pass", DeploymentStatus.SUCCEEDED, "passed: 4 rounds judged"),
        ("wait", DeploymentStatus.FAILED, "inconclusive for too long: 0 of 4 rounds judged within the 3 s timeout"),
    ],
    ids=["fail", "pass", "wait-times-out"],
)
def test_too_little_traffic_is_inconclusive_and_does_what_the_step_says(product, environment, policy, status, needle):
    environment([analysis(on_inconclusive=policy, timeout=3)])  # no traffic at all
    deployment = deploy("v2")
    assert deployment.status == status, deployment.error
    step = analysis_run(deployment)
    assert needle in (step.error or step.output)
    traffic = [m for m in measurements(deployment) if not m.label.endswith(" up")]
    assert traffic and {m.verdict for m in traffic} == {"inconclusive"}
    assert "fewer than 50" in traffic[0].detail


def test_waiting_on_inconclusive_goes_on_past_the_duration_until_there_is_traffic_to_judge(product, environment):
    environment([analysis(on_inconclusive="wait", timeout=60)])
    threading.Timer(1.2, product.start_traffic).start()  # the product gets busy a little after the step starts
    deployment = deploy("v2")
    assert deployment.status == DeploymentStatus.SUCCEEDED, deployment.error
    found = measurements(deployment)
    verdicts = [m.verdict for m in found if m.label.endswith("error_ratio")]
    assert verdicts[0] == "inconclusive" and verdicts[-4:] == ["pass"] * 4
    assert len(verdicts) > 4  # the inconclusive rounds did not count towards the four


def test_a_condition_can_compare_with_the_previous_releases_own_figures(product, environment, settings):
    # The previous release (slow) served through the minute before the deployment: its p95 is the baseline.
    wait_for_the_minute_to_have_time_left()
    minute_ago = timezone.now() - timedelta(seconds=60)
    product.deploy("slow-1")
    scrape_sources_run(list(scrape_sources(service=SERVICE)), now=minute_ago - timedelta(seconds=10))
    product.seconds_of_traffic(150)
    scrape_sources_run(list(scrape_sources(service=SERVICE)), now=minute_ago)
    environment(
        [
            backend(product.releases.parent),
            analysis(
                {"service": SERVICE, "signal": "p95", "baseline": {"margin": 0.25}},
                {"service": SERVICE, "signal": "error_ratio", "max": 0.2, "baseline": {"margin": 0.005}},
                window=60,
            ),
        ]
    )
    product.start_traffic()
    deployment = deploy("flaky-2")  # faster than slow-1, but fails five times as often
    assert deployment.status == DeploymentStatus.ROLLED_BACK
    assert "error_ratio breached 2 times in a row" in deployment.error
    found = measurements(deployment)
    p95 = [m for m in found if m.label.endswith("p95")]
    errors = [m for m in found if m.label.endswith("error_ratio")]
    baseline_p95 = p95[0].baseline
    assert baseline_p95 is not None and baseline_p95 > 2.0  # slow-1's own p95
    assert all(m.threshold == pytest.approx(baseline_p95 + 0.25) for m in p95)
    assert all(m.verdict == "pass" for m in p95)  # flaky-2 is no slower than slow-1
    # slow-1 failed 0.1 % of its requests: the allowance (baseline + 0.5 %) is stricter than the max of 20 %.
    assert errors[0].baseline is not None and errors[0].baseline < 0.01
    assert errors[-1].threshold == pytest.approx(errors[0].baseline + 0.005)
    assert errors[-1].verdict == "fail" and errors[-1].value < 0.2  # breached by the baseline, not the max
    assert "baseline" in analysis_run(deployment).output


def test_without_a_baseline_a_condition_is_judged_by_its_bounds_alone(product, environment):
    environment([analysis({"service": SERVICE, "signal": "error_ratio", "max": 0.01, "baseline": {"margin": 0.001}})])
    product.seconds_of_traffic(30)  # enough to judge from the first round
    product.start_traffic()
    deployment = deploy("v3")
    assert deployment.status == DeploymentStatus.SUCCEEDED, deployment.error
    assert "no baseline: " in analysis_run(deployment).output
    assert {(m.baseline, m.threshold) for m in measurements(deployment)} == {(None, 0.01)}


def test_slo_burn_and_alert_rule_conditions(product, environment):
    from alerting.models import Alert, AlertRule, AlertState

    ServiceLevelObjective.objects.create(
        service=Service.objects.get(name=SERVICE), name="availability", kind="availability", target_percent=99.0
    )
    rule = AlertRule.objects.create(name="backend down", kind="service_up", service=SERVICE, threshold=0.5)
    environment(
        [
            analysis(
                {"service": SERVICE, "slo": "availability", "max": 2.0},
                {"alerts": ["backend down"]},
            )
        ]
    )
    product.seconds_of_traffic(30)  # enough to judge from the first round
    product.start_traffic()
    assert deploy("v4").status == DeploymentStatus.SUCCEEDED
    Alert.objects.create(rule=rule, dedup_key="backend down", state=AlertState.FIRING)
    deployment = deploy("v5")
    assert deployment.status == DeploymentStatus.FAILED  # nothing to roll back: it fails
    assert "alerts firing: backend down breached 2 times in a row: firing: backend down" in deployment.error
    burn = [m for m in measurements(deployment) if "burn rate" in m.label]
    assert burn and all(m.verdict == "pass" and m.value < 2.0 for m in burn)


def test_a_condition_naming_what_does_not_exist_fails_at_once(product, environment):
    environment([analysis({"service": "nobody", "signal": "p95", "max": 1.0})])
    deployment = deploy("v1")
    assert deployment.status == DeploymentStatus.FAILED
    assert "conditions[0]: no service named 'nobody'" in deployment.error
    assert measurements(deployment) == []


def test_a_cancel_stops_the_analysis_at_once_and_rolls_back(product, environment, settings):
    settings.DEPLOY_HEARTBEAT_SECONDS = 1
    environment([backend(product.releases.parent), analysis(duration=600, interval=1)])
    product.start_traffic()
    deployment = deployment_request(environment="test", version="v9", actor=SYSTEM)
    runner = threading.Thread(target=run, args=(deployment.pk,))
    runner.start()
    try:
        wait_until(lambda: AnalysisMeasurement.objects.filter(step_run__deployment=deployment).exists())
        deployment_cancel(deployment=Deployment.objects.get(pk=deployment.pk), actor=SYSTEM)
    finally:
        runner.join(timeout=30)
    assert not runner.is_alive(), "the analysis went on after the cancel"
    deployment.refresh_from_db()
    assert deployment.status == DeploymentStatus.CANCELLED
    step = analysis_run(deployment)
    assert step.status == StepStatus.FAILED and "cancelled by an operator" in step.error
    assert product.releases.read_text().split() == []  # the backend step was rolled back


def wait_until(condition, timeout: float = 30) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def wait_for_the_minute_to_have_time_left(seconds: int = 15) -> None:
    """The baseline is read by whole minutes: start where the deployment starts in this minute."""
    import time

    now = timezone.now()
    if now.second > 60 - seconds:
        time.sleep(60 - now.second - now.microsecond / 1e6 + 0.1)


def test_the_deployment_page_draws_each_condition_against_its_threshold(product, environment, operator_client):
    environment([analysis()])
    product.seconds_of_traffic(30)  # enough to judge from the first round
    product.start_traffic()
    deployment = deploy("v8")
    assert deployment.status == DeploymentStatus.SUCCEEDED, deployment.error
    for url in (f"/deployments/{deployment.pk}/", f"/deployments/{deployment.pk}/live"):
        html = operator_client.get(url).content.decode()
        assert "<h2>Analysis: analysis</h2>" in html
        assert html.count('<figure class="chart analysis-chart"') == 3
        assert html.count('class="threshold"') == 3 and html.count('class="measured"') == 3
        assert html.count('<circle class="verdict-pass"') == 12  # four rounds of three conditions
        # In words, for screen readers and the pointer: the caption, the drawing's title, each dot's title.
        assert f"{SERVICE} error_ratio: latest " in html and "against 0.01 (pass: " in html
        assert f"{SERVICE} p95 at each measurement over" in html
        assert "threshold 2, pass (" in html
