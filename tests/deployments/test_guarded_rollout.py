"""Guarded flag rollouts (deployments.guarded): a flag's rollout raised step by step in one environment while
guards watch the product; a breach puts the flag back exactly as it was, alerts and is audited. Run by the
runner in-process against the demo product on a free port (short holds); the one run with a real worker is
the last test."""

from __future__ import annotations

import json
import threading
import time

import pytest
from django.test import Client

from controlplane.audit import Actor
from controlplane.changes import changes_between
from controlplane.models import AuditEvent
from controlplane.models import Environment as GroundEnvironment
from deployments.guarded import (
    GuardedRolloutState,
    default_guards,
    guarded_rollout_abort,
    guarded_rollout_pause,
    guarded_rollout_resume,
    guarded_rollout_skip,
    guarded_rollout_start,
)
from deployments.models import Deployment, DeploymentStatus, DeploymentType, LogLine, Phase, StepRun
from deployments.runner import run
from deployments.services import DeploymentLocked, InvalidDeployment, deployment_request
from flags.definitions import state_doc
from flags.models import FlagState
from flags.services import flag_create, flag_state_set
from monitoring.models import MetricSource, Service, SourceKind
from monitoring.scrape import scrape_sources, scrape_sources_run
from tests.deployments.analysis_product import Product
from tests.deployments.conftest import wait_for

pytestmark = [pytest.mark.django_db(transaction=True)]
SYSTEM = Actor.system("tests")
SERVICE = "demo-backend"
FLAG = "checkout_v2"
# The flag's state before any plan: more than today's one line (named users and a rollout), so "restored"
# means restored whole, not just "off".
BEFORE = {"enabled": True, "rollout_percent": 0, "targeting_keys": ["alice", "bob"]}
QUICK = {"percents": [10, 50, 100], "hold": 1, "interval": 0.25, "window": 30, "min_requests": 10}


@pytest.fixture(autouse=True)
def quick_heartbeat(settings):
    settings.DEPLOY_HEARTBEAT_SECONDS = 1


@pytest.fixture
def test_env(environment):
    """The environment "test" (not a production one) with an empty pipeline; the flag in it as BEFORE."""
    env = environment([])
    flag_create(data={"name": FLAG, "owner": SERVICE}, actor=SYSTEM)
    flag_state_set(name=FLAG, environment="test", state=BEFORE, actor=SYSTEM)
    return env


@pytest.fixture
def product(tmp_path):
    served = Product(tmp_path / "demo-product")
    service = Service.objects.create(name=SERVICE)
    MetricSource.objects.create(
        service=service, kind=SourceKind.SCRAPE, urls=served.metrics_url, interval_seconds=15, timeout_seconds=5
    )
    scrape_sources_run(list(scrape_sources(service=SERVICE)))
    yield served
    served.close()


def state_now(environment: str = "test") -> dict:
    return state_doc(FlagState.objects.get(flag__name=FLAG, environment__name=environment))


def start(**plan) -> Deployment:
    return guarded_rollout_start(flag=FLAG, environment="test", plan={**QUICK, **plan}, actor=SYSTEM)


def in_thread(deployment: Deployment) -> threading.Thread:
    thread = threading.Thread(target=run, args=(deployment.pk,), daemon=True)
    thread.start()
    return thread


def until(check, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError("the condition never held")


def running_step(deployment: Deployment) -> str | None:
    found = StepRun.objects.filter(deployment=deployment, phase=Phase.FORWARD, status="running").first()
    return found.name if found else None


def test_a_guarded_rollout_completes_on_a_healthy_service(test_env, product):
    product.start_traffic()
    deployment = start()
    assert (deployment.type, deployment.flag) == (DeploymentType.GUARDED, FLAG)
    assert run(deployment.pk) == DeploymentStatus.SUCCEEDED
    deployment.refresh_from_db()
    assert deployment.status == DeploymentStatus.SUCCEEDED, deployment.error
    now = state_now()
    assert now["enabled"] is True
    rollout = [s for s in now["strategies"] if s["kind"] == "flexibleRollout"]
    assert [s["rollout"] for s in rollout] == [100]
    # Every hold measured the default guards (the owner names the service) and passed.
    holds = StepRun.objects.filter(deployment=deployment, kind="analysis").order_by("index")
    assert [h.name for h in holds] == ["hold at 10 percent", "hold at 50 percent", "hold at 100 percent"]
    labels = {m.label for h in holds for m in h.measurements.all()}
    assert labels == {f"{SERVICE} error_ratio", f"{SERVICE} p95"}
    # Each raise is audited as a guarded-rollout step and drawn as a change on the charts.
    raises = AuditEvent.objects.filter(action="flag.guarded_rollout.update").order_by("id")
    assert raises.count() == 3
    kinds = [(c.kind, c.what) for c in changes_between(deployment.created_at, deployment.finished_at)]
    assert ("guarded rollout step", f"guarded rollout step: {FLAG} in test raised to 50 %") in kinds
    # Its request is not a change (nothing moved yet); the run's start is.
    assert ("guarded rollout", f"guarded rollout of {FLAG} in test: started") not in kinds
    assert ("deployment", f"deployment #{deployment.pk} of flag-{FLAG} to test: started") in kinds
    # The plan acted in its environment only: production's state of the flag is as it was made (off).
    assert state_now("production")["enabled"] is False
    assert not Deployment.objects.active().exists()


def test_a_breached_guard_restores_the_flag_exactly_alerts_and_is_audited(test_env, product, http_sink, request):
    from alerting.models import Delivery
    from alerting.services import channel_create

    flag_create(data={"name": "external_alerts", "enabled": True, "rollout_percent": 100}, actor=SYSTEM)
    channel_create(
        data={"name": "hook", "kind": "webhook", "url": f"http://127.0.0.1:{http_sink.port}/events"}, actor=SYSTEM
    )
    before = state_now()
    product.deploy("flaky-3")  # the service the flag's users reach fails: the first hold must catch it
    product.start_traffic()
    deployment = start(hold=30)
    request.getfixturevalue("eager_tasks")
    assert run(deployment.pk) == DeploymentStatus.ROLLED_BACK
    deployment.refresh_from_db()
    assert "step hold at 10 percent failed: " in deployment.error
    assert f"{SERVICE} error_ratio breached 1 times in a row: " in deployment.error
    # Put back as it was, whole: the named users and the rollout, not just "off".
    assert state_now() == before
    restore = StepRun.objects.get(deployment=deployment, phase=Phase.ROLLBACK)
    assert (restore.name, restore.status) == ("restore the flag", "succeeded")
    # The later steps never ran.
    assert not StepRun.objects.filter(deployment=deployment, name="raise to 50 percent").exists()
    # The channel heard which guard and what value.
    documents = [json.loads(r.body) for r in http_sink.requests]
    ended = [d for d in documents if d["kind"] == "deployment" and d["details"]["status"] == "rolled_back"]
    assert len(ended) == 1, documents
    assert ended[0]["alert"].startswith(f"guarded rollout #{deployment.pk} of flag {FLAG} in test: rolled back: ")
    assert f"{SERVICE} error_ratio breached" in ended[0]["alert"] and " > 0.01" in ended[0]["alert"]
    assert ended[0]["details"]["flag"] == FLAG
    assert Delivery.objects.filter(payload__kind="deployment", status="sent").count() >= 2
    # Audited: the raise and the restore, as guarded-rollout steps, and the run's rollback.
    actions = list(AuditEvent.objects.filter(object_label=FLAG).values_list("action", flat=True).order_by("id"))
    assert actions[-2:] == ["flag.guarded_rollout.update", "flag.guarded_rollout.state.update"]
    assert AuditEvent.objects.filter(action="deployment.rolled_back", object_id=str(deployment.pk)).exists()


@pytest.fixture
def quiet_service(db):
    """A monitored service with no traffic: its guards are inconclusive, which a plan passes by default."""
    return Service.objects.create(name=SERVICE)


def test_pause_holds_skip_ends_the_hold_and_resume_goes_on(test_env, quiet_service):
    deployment = start(percents=[10, 100], hold=60, interval=0.2)
    thread = in_thread(deployment)
    until(lambda: running_step(deployment) == "hold at 10 percent")
    guarded_rollout_pause(deployment=deployment, actor=SYSTEM)
    with pytest.raises(GuardedRolloutState, match="paused already"):
        guarded_rollout_pause(deployment=deployment, actor=SYSTEM)
    # The hold reads the pause (at the runner's next heartbeat) and goes on measuring.
    until(
        lambda: "paused: measuring on" in StepRun.objects.get(deployment=deployment, name="hold at 10 percent").output
    )
    guarded_rollout_skip(deployment=deployment, actor=SYSTEM)
    # The hold ended, but a paused plan raises nothing: it waits for a resume.
    until(lambda: LogLine.objects.filter(deployment=deployment, message__startswith="paused: the next step").exists())
    assert running_step(deployment) is None
    rollout = [s["rollout"] for s in state_now()["strategies"] if s["kind"] == "flexibleRollout"]
    assert rollout == [10]
    guarded_rollout_resume(deployment=deployment, actor=SYSTEM)
    until(lambda: running_step(deployment) == "hold at 100 percent")
    guarded_rollout_skip(deployment=deployment, actor=SYSTEM)
    thread.join(30)
    deployment.refresh_from_db()
    assert deployment.status == DeploymentStatus.SUCCEEDED, deployment.error
    hold = StepRun.objects.get(deployment=deployment, name="hold at 100 percent")
    assert "skipped ahead by an operator" in hold.output
    markers = {c.what for c in changes_between(deployment.created_at, deployment.finished_at)}
    assert f"guarded rollout of {FLAG} in test: paused" in markers
    assert f"guarded rollout of {FLAG} in test: skipped ahead" in markers
    audited = set(AuditEvent.objects.filter(action__startswith="guarded_rollout.").values_list("action", flat=True))
    assert audited == {"guarded_rollout.start", "guarded_rollout.paused", "guarded_rollout.resumed",
                       "guarded_rollout.skipped"}  # fmt: skip


def test_abort_restores_the_flag_as_a_breach_does(test_env, quiet_service):
    before = state_now()
    deployment = start(percents=[10, 100], hold=60, interval=0.2)
    thread = in_thread(deployment)
    until(lambda: running_step(deployment) == "hold at 10 percent")
    assert state_now() != before
    guarded_rollout_abort(deployment=deployment, actor=SYSTEM)
    thread.join(30)
    deployment.refresh_from_db()
    assert deployment.status == DeploymentStatus.CANCELLED
    assert state_now() == before
    assert AuditEvent.objects.filter(action="guarded_rollout.abort", object_id=str(deployment.pk)).exists()
    with pytest.raises(GuardedRolloutState):  # over: nothing left to abort
        guarded_rollout_abort(deployment=deployment, actor=SYSTEM)


def test_one_plan_per_flag_and_environment_and_the_deploy_lock_is_not_taken(test_env, quiet_service):
    first = start()
    with pytest.raises(DeploymentLocked, match=f"flag {FLAG} in test is locked by guarded rollout #{first.pk}"):
        start()
    assert Deployment.objects.filter(flag=FLAG).count() == 1
    # A deploy of the same environment is not held back by the plan, nor the plan by a deploy.
    deploy = deployment_request(environment="test", version="v2", actor=SYSTEM)
    assert deploy.status == DeploymentStatus.QUEUED
    flag_create(data={"name": "other_flag"}, actor=SYSTEM)
    other = guarded_rollout_start(flag="other_flag", environment="test", plan=QUICK, actor=SYSTEM)
    assert other.status == DeploymentStatus.QUEUED
    # ...while a second deploy still is (the environment's own lock is untouched).
    with pytest.raises(DeploymentLocked, match=f"test is locked by deployment #{deploy.pk}"):
        deployment_request(environment="test", version="v3", actor=SYSTEM)
    # Both run at once, each to its end.
    runs = [in_thread(first), in_thread(deploy)]
    for thread in runs:
        thread.join(30)
    assert {d.status for d in Deployment.objects.filter(pk__in=[first.pk, deploy.pk])} == {"succeeded"}


@pytest.mark.parametrize(
    ("plan", "field"),
    [
        ({"percents": "5, 1"}, "percents[1]"),
        ({"percents": "0"}, "percents[0]"),
        ({"percents": "a lot"}, "percents"),
        ({"hold": "-1"}, "hold"),
        ({"hold": 1, "interval": 5}, "interval"),
        ({"colour": "red"}, "colour"),
    ],
    ids=["falling", "zero", "words", "negative-hold", "interval-over-hold", "unknown-field"],
)
def test_a_bad_plan_is_refused_naming_the_field_and_nothing_starts(test_env, quiet_service, plan, field):
    with pytest.raises(InvalidDeployment) as raised:
        guarded_rollout_start(flag=FLAG, environment="test", plan=plan, actor=SYSTEM)
    assert raised.value.field == field
    assert not Deployment.objects.exists()


def test_a_missing_flag_or_an_environment_without_a_runner_is_refused(test_env, quiet_service):
    with pytest.raises(InvalidDeployment, match="no flag named 'nope'"):
        guarded_rollout_start(flag="nope", environment="test", actor=SYSTEM)
    with pytest.raises(InvalidDeployment, match="has no pipeline runner set up"):
        guarded_rollout_start(flag=FLAG, environment="staging", actor=SYSTEM)
    assert not Deployment.objects.exists()


def test_the_default_guards_are_the_owners_services_or_every_monitored_one(db):
    Service.objects.create(name="api")
    Service.objects.create(name="web")
    assert {g["service"] for g in default_guards("api, someone")} == {"api"}
    assert {g["service"] for g in default_guards("the platform team")} == {"api", "web"}
    assert {(g["signal"], g.get("max")) for g in default_guards("")} == {("error_ratio", 0.01), ("p95", 2.0)}


def test_a_production_environment_holds_ten_minutes_by_default(environment, quiet_service):
    from deployments.defaults import ensure_defaults

    ensure_defaults()
    flag_create(data={"name": FLAG, "owner": SERVICE}, actor=SYSTEM)
    deployment = guarded_rollout_start(flag=FLAG, environment="production", actor=SYSTEM)
    holds = [s for s in deployment.steps if s["kind"] == "analysis"]
    assert [s["duration"] for s in holds] == [600] * 5
    raises = [s["set"][FLAG]["rollout_percent"] for s in deployment.steps if s["kind"] == "flags"]
    assert raises == [1, 5, 25, 50, 100]


# --- The page ------------------------------------------------------------------------------------


@pytest.fixture
def flag_page(test_env, quiet_service):
    return f"/flags/{FLAG}/"


def test_the_flag_page_shows_the_section_its_plan_and_its_buttons(flag_page, operator, viewer):
    operator_client, viewer_client = Client(), Client()
    operator_client.force_login(operator)
    viewer_client.force_login(viewer)
    html = operator_client.get(flag_page).content.decode()
    assert 'id="guarded-rollouts"' in html and "Start a guarded rollout" in html
    assert f"the services the flag&#x27;s owner names: {SERVICE}" in html
    deployment = start(percents=[10, 100], hold=60, interval=0.2)
    html = operator_client.get(flag_page).content.decode()
    assert f"Guarded rollout #{deployment.pk}" in html and "10 %" in html and ">Pause</button>" in html
    live = operator_client.get(f"/deployments/guarded/{FLAG}/live").content.decode()
    assert live.startswith("\n<section") or '<section class="panel" id="guarded-rollouts"' in live
    assert "htmx-2.min.js" not in live  # the partial alone, swapped into the page
    # The deployments list and page show it as a guarded rollout of the flag.
    listed = operator_client.get("/deployments/").content.decode()
    assert f'id="deployment-{deployment.pk}"' in listed and "guarded rollout: <a href=" in listed
    page = operator_client.get(f"/deployments/{deployment.pk}/").content.decode()
    assert f"Guarded rollout #{deployment.pk}: flag {FLAG} in test" in page
    # A viewer sees the plan, without buttons.
    html = viewer_client.get(flag_page).content.decode()
    assert f"Guarded rollout #{deployment.pk}" in html and ">Pause</button>" not in html


def test_the_buttons_need_the_change_permission_and_csrf(flag_page, viewer, operator):
    url = f"/deployments/guarded/{FLAG}/start"
    viewer_client = Client()
    viewer_client.force_login(viewer)
    assert viewer_client.post(url, {"environment": "test"}).status_code == 403
    anonymous = Client().post(url, {"environment": "test"})
    assert anonymous.status_code == 302 and "/login" in anonymous["Location"]
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(operator)
    assert strict.post(url, {"environment": "test"}).status_code == 403
    assert not Deployment.objects.exists()
    client = Client()
    client.force_login(operator)
    response = client.post(url, {"environment": "test", "percents": "10, 100", "hold": "5"})
    assert response.status_code == 302
    deployment = Deployment.objects.get()
    assert [s["duration"] for s in deployment.steps if s["kind"] == "analysis"] == [5, 5]
    assert viewer_client.post(f"/deployments/{deployment.pk}/guarded/pause").status_code == 403
    assert client.post(f"/deployments/{deployment.pk}/guarded/pause").status_code == 302
    deployment.refresh_from_db()
    assert deployment.paused is True
    # A refusal (the second plan) says why on the flag page.
    page = client.post(url, {"environment": "test"}, follow=True).content.decode()
    assert f"is locked by guarded rollout #{deployment.pk}" in page


def test_in_production_the_buttons_ask_first(operator_client, quiet_service):
    from deployments.defaults import ensure_defaults

    ensure_defaults()
    assert GroundEnvironment.objects.get(name="production").production
    flag_create(data={"name": FLAG}, actor=SYSTEM)
    url = f"/deployments/guarded/{FLAG}/start"
    asked = operator_client.post(url, {"environment": "production", "percents": "1, 100"})
    assert asked.status_code == 200 and "is a production environment" in asked.content.decode()
    assert 'name="percents" value="1, 100"' in asked.content.decode()
    assert not Deployment.objects.filter(flag=FLAG).exists()
    done = operator_client.post(url, {"environment": "production", "percents": "1, 100", "confirm": "yes"})
    assert done.status_code == 302
    deployment = Deployment.objects.get(flag=FLAG)
    asked = operator_client.post(f"/deployments/{deployment.pk}/guarded/abort")
    assert asked.status_code == 200 and "Abort" in asked.content.decode()
    deployment.refresh_from_db()
    assert deployment.status == DeploymentStatus.QUEUED
    operator_client.post(f"/deployments/{deployment.pk}/guarded/abort", {"confirm": "yes"})
    deployment.refresh_from_db()
    assert deployment.status == DeploymentStatus.CANCELLED


# --- With a real worker, once ----------------------------------------------------------------------


def test_a_real_worker_runs_a_guarded_rollout_and_restores_the_flag_on_a_sick_service(
    test_env, product, worker, settings
):
    before = state_now()
    product.deploy("flaky-3")
    product.start_traffic()
    worker(CONTROLPLANE_VAR_DIR=str(settings.VAR_DIR))
    deployment = wait_for(start(hold=30), timeout=120)
    assert deployment.status == DeploymentStatus.ROLLED_BACK, deployment.error
    assert f"{SERVICE} error_ratio breached" in deployment.error
    assert state_now() == before


@pytest.mark.parametrize(
    ("step", "field"),
    [
        ({"set": {FLAG: {"enabled": True}}, "states": {FLAG: {"enabled": True}}}, "steps[0].states"),
        ({"states": {}}, "steps[0].states"),
        ({"states": {FLAG: {"enabled": "yes"}}}, f"steps[0].states.{FLAG}.enabled"),
    ],
    ids=["set-and-states", "no-states", "bad-state"],
)
def test_a_flags_step_restoring_states_is_checked_like_any_step(step, field):
    from deployments.steps import InvalidStep, validate_steps

    with pytest.raises(InvalidStep) as raised:
        validate_steps([{"name": "restore", "kind": "flags", **step}])
    assert raised.value.field == field


def test_only_a_plan_is_a_guarded_rollout(test_env):
    with pytest.raises(InvalidDeployment) as raised:
        deployment_request(environment="test", version="v2", type="guarded", actor=SYSTEM)
    assert raised.value.field == "type"
    assert not Deployment.objects.exists()


def test_the_reaper_restores_the_flag_of_a_plan_whose_worker_was_lost(test_env, quiet_service, request):
    from datetime import timedelta

    from django.utils import timezone

    from deployments.runner import RunOutcome
    from deployments.services import reap

    before = state_now()
    deployment = start(percents=[10, 100], hold=60, interval=0.2)
    outcome: list[str] = []
    thread = threading.Thread(target=lambda: outcome.append(run(deployment.pk)), daemon=True)
    thread.start()
    until(lambda: running_step(deployment) == "hold at 10 percent")
    request.getfixturevalue("eager_tasks")  # the reaper's continue_rollback runs here, as a worker would
    # As if its worker stopped heartbeating a minute ago: the reaper takes the plan over and rolls it back.
    summary = reap(now=timezone.now() + timedelta(seconds=120))
    assert summary["rolled_back"] == [deployment.pk]
    thread.join(30)
    assert outcome == [RunOutcome.CLAIM_LOST]  # the lost runner stopped; the reaper's claim finished it
    deployment.refresh_from_db()
    assert deployment.status == DeploymentStatus.ROLLED_BACK
    assert state_now() == before


def test_abort_restores_the_state_the_first_step_replaced_not_the_one_at_the_request(test_env, quiet_service):
    deployment = start(percents=[10, 100], hold=60, interval=0.2)
    at_request = state_now()
    # Changed by hand while the plan waits for a worker: this is what the plan replaces, so what it restores.
    by_hand = {"enabled": True, "rollout_percent": 5, "targeting_keys": ["carol"]}
    flag_state_set(name=FLAG, environment="test", state=by_hand, actor=SYSTEM)
    changed = state_now()
    assert changed != at_request
    thread = in_thread(deployment)
    until(lambda: running_step(deployment) == "hold at 10 percent")
    assert state_now() != changed
    guarded_rollout_abort(deployment=deployment, actor=SYSTEM)
    thread.join(30)
    deployment.refresh_from_db()
    assert deployment.status == DeploymentStatus.CANCELLED
    assert state_now() == changed
    restore = StepRun.objects.get(deployment=deployment, phase=Phase.ROLLBACK, name="restore the flag")
    assert restore.status == "succeeded"
