"""Alerts that know what changed and their runbook: a firing alert lists the changes of the hour before it
(dashboard, alert admin, the notification a channel receives); a rule may name a recovery plan, which its
alerts offer to run, or, with ``auto``, run once per firing (audited); a plan that does not exist is refused."""

from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest
from django.utils import timezone

from alerting.models import Alert, AlertRule, AlertState
from alerting.services import InvalidAlertSetting, alert_rules_evaluate, channel_create, rule_create, rule_update
from alerting.signals import alert_fired
from controlplane.audit import Actor
from controlplane.models import AuditEvent
from deployments.models import Deployment, DeploymentStatus, DeploymentType, RecoveryPlan
from deployments.services import deployment_request, environment_save, pipeline_save
from flags.services import flag_create, flag_update
from monitoring.models import HealthMetric

pytestmark = [pytest.mark.django_db]
SYSTEM = Actor.system("tests")
ALICE = Actor.system("alice")
RULE = "any check failing 3 times running"
PLAN = "restart_backend"
STEPS = [{"name": "restart", "kind": "wait", "seconds": 0}]


@pytest.fixture
def plan(db):
    pipeline = pipeline_save(name="runbook-pipeline", steps=STEPS, actor=SYSTEM)
    env = environment_save(name="runbook", pipeline=pipeline, actor=SYSTEM)
    return RecoveryPlan.objects.create(failure_type=PLAN, environment=env, steps=STEPS, runbook="Restart it.")


def sink_url(sink, path: str) -> str:
    return f"http://127.0.0.1:{sink.port}{path}"


def rule(**changes) -> AlertRule:
    found = AlertRule.objects.get(name=RULE)
    return rule_update(rule=found, changes=changes, actor=SYSTEM) if changes else found


def fail_checks(capture, times: int = 3, status: str = "fail") -> None:
    """The postgres check fails (or passes) ``times`` more times; the rules are evaluated and what they
    queue for after the commit runs (deliveries, the alert_fired signal)."""
    for _ in range(times):
        HealthMetric.objects.create(component="postgres", measurement="connection", status=status)
    with capture(execute=True):
        alert_rules_evaluate()


def firing_alert() -> Alert:
    return Alert.objects.get(rule__name=RULE, component="postgres", state=AlertState.FIRING)


def recoveries() -> list[Deployment]:
    return list(Deployment.objects.filter(type=DeploymentType.RECOVERY, recovery_type=PLAN).order_by("id"))


def long_ago(name: str) -> None:
    """The changes to ``name`` (a fixture's flag) happened three hours ago: out of every alert's hour."""
    AuditEvent.objects.filter(object_label=name).update(time=timezone.now() - timedelta(hours=3))


def changes_at(minutes_ago: int, name: str) -> None:
    """A flag made and turned on by alice, recorded ``minutes_ago``."""
    flag_create(data={"name": name, "enabled": False}, actor=ALICE)
    flag_update(name=name, changes={"enabled": True}, actor=ALICE, action="flag.toggle")
    AuditEvent.objects.filter(object_label=name).update(time=timezone.now() - timedelta(minutes=minutes_ago))


# --- A rule's plan must exist -------------------------------------------------------------------


@pytest.mark.parametrize(
    "data,field,message",
    [
        pytest.param(
            {"recovery_plan": "reboot_everything"},
            "recovery_plan",
            "no recovery plan 'reboot_everything'; plans: restart_backend",
            id="unknown-plan",
        ),
        pytest.param({"recovery_auto": True}, "recovery_auto", "name the plan first", id="auto-without-plan"),
    ],
)  # fmt: skip
def test_a_rule_naming_a_plan_that_does_not_exist_is_refused_and_nothing_changes(plan, data, field, message):
    before = AuditEvent.objects.count()
    with pytest.raises(InvalidAlertSetting) as refused:
        rule_create(
            data={"name": "backend restarts", "kind": "check_status", "component": "*", "threshold": 3, **data},
            actor=SYSTEM,
        )
    assert refused.value.field == field and message in refused.value.message
    assert not AlertRule.objects.filter(name="backend restarts").exists()
    with pytest.raises(InvalidAlertSetting) as refused:
        rule(**data)
    assert refused.value.field == field
    assert (rule().recovery_plan, rule().recovery_auto) == ("", False)
    assert AuditEvent.objects.count() == before


def test_the_admin_form_says_which_plans_exist(plan, operator_client):
    found = rule()
    assert "recovery_plan" in operator_client.get(f"/admin/alerting/alertrule/{found.pk}/change/").content.decode()
    data = {
        key: getattr(found, key)
        for key in ("name", "kind", "component", "measurement", "service", "severity", "threshold", "window_minutes",
                    "for_evaluations", "repeat_interval_minutes", "description")
    }  # fmt: skip
    data["enabled"] = "on"
    response = operator_client.post(
        f"/admin/alerting/alertrule/{found.pk}/change/", {**data, "recovery_plan": "reboot_everything"}
    )
    assert response.status_code == 200
    assert "no recovery plan &#x27;reboot_everything&#x27;; plans: restart_backend" in response.content.decode()
    assert rule().recovery_plan == ""
    response = operator_client.post(f"/admin/alerting/alertrule/{found.pk}/change/", {**data, "recovery_plan": PLAN})
    errors = re.findall(r'<ul class="errorlist"[^>]*>(.*?)</ul>', response.content.decode(), re.S)
    assert response.status_code == 302, errors
    assert rule().recovery_plan == PLAN
    assert AuditEvent.objects.filter(action="alertrule.update", after__recovery_plan=PLAN).exists()


# --- The changes of the hour before ---------------------------------------------------------------


def test_the_notification_a_channel_receives_lists_the_changes_of_the_hour_before(
    alerts_on, eager_tasks, http_sink, plan, django_capture_on_commit_callbacks, settings
):
    settings.PUBLIC_URL = "https://ops.example.com"
    webhook = channel_create(
        data={"name": "hook", "kind": "webhook", "url": sink_url(http_sink, "/hook")}, actor=SYSTEM
    )
    slack = channel_create(data={"name": "slack", "kind": "slack", "url": sink_url(http_sink, "/slack")}, actor=SYSTEM)
    rule(channels=[webhook, slack], recovery_plan=PLAN)
    long_ago("external_alerts")
    changes_at(20, "new_checkout")
    changes_at(150, "old_banner")  # over two hours before: not listed

    fail_checks(django_capture_on_commit_callbacks)

    document = json.loads(http_sink.wait_for(lambda r: r.path == "/hook")[0].body)
    assert document["event"] == "firing"
    assert [(c["kind"], c["what"], c["who"]) for c in document["changes"]] == [
        ("flag", "flag new_checkout in production: created (off, rollout 0 %)", "alice"),
        ("flag", "flag new_checkout in production: turned on", "alice"),
    ]
    alert = firing_alert()
    assert document["recovery_plan"] == {
        "name": PLAN, "auto": False, "url": f"https://ops.example.com/deployments/recovery/{PLAN}/plan?alert={alert.pk}",
    }  # fmt: skip
    text = json.loads(http_sink.wait_for(lambda r: r.path == "/slack")[0].body)["text"]
    assert "Changes in the hour before it fired:\n- " in text
    assert "flag new_checkout in production: turned on, by alice" in text and "old_banner" not in text
    link = f"https://ops.example.com/deployments/recovery/{PLAN}/plan?alert={alert.pk}"
    assert f"recovery plan: {PLAN} (run it from {link})" in text


def test_with_no_change_before_it_the_notification_says_so(
    alerts_on, eager_tasks, http_sink, django_capture_on_commit_callbacks
):
    slack = channel_create(data={"name": "slack", "kind": "slack", "url": sink_url(http_sink, "/slack")}, actor=SYSTEM)
    rule(channels=[slack])
    long_ago("external_alerts")
    fail_checks(django_capture_on_commit_callbacks)
    text = json.loads(http_sink.wait_for(lambda r: r.path == "/slack")[0].body)["text"]
    assert "No change in the hour before it fired." in text and "recovery plan" not in text


def test_the_dashboard_and_the_alert_admin_list_the_changes_and_offer_the_plan(
    plan, operator_client, django_capture_on_commit_callbacks
):
    rule(recovery_plan=PLAN)
    changes_at(10, "new_checkout")
    fail_checks(django_capture_on_commit_callbacks)
    alert = firing_alert()
    link = f'<a class="run-plan" href="/deployments/recovery/{PLAN}/plan?alert={alert.pk}">run {PLAN}</a>'

    page = operator_client.get("/").content.decode()
    item = re.search(rf'<li id="alert-{alert.pk}"[^>]*>(.*?)</li>\s*</ul>\s*</section>', page, re.S).group(1)
    assert link in item
    assert "2 changes in the hour before it fired" in item
    assert 'flag new_checkout in production: turned on <span class="muted">by alice</span>' in item

    admin = operator_client.get(f"/admin/alerting/alert/{alert.pk}/change/").content.decode()
    assert link in admin and "flag new_checkout in production: turned on, by alice" in admin
    assert recoveries() == []  # offered, not run: the rule does not say auto


# --- auto: once per firing, audited ---------------------------------------------------------------


def test_auto_runs_the_plan_once_per_firing_and_audits_it(plan, django_capture_on_commit_callbacks):
    rule(recovery_plan=PLAN, recovery_auto=True)
    fail_checks(django_capture_on_commit_callbacks)
    alert = firing_alert()
    [first] = recoveries()
    assert (first.status, first.requested_by, first.environment.name) == (
        DeploymentStatus.QUEUED, f"alert rule {RULE}", "runbook",
    )  # fmt: skip
    assert alert.recovery_started_at is not None
    audited = AuditEvent.objects.get(action="alert.recovery_run")
    assert (audited.object_id, audited.actor_label) == (str(alert.pk), f"alert rule {RULE}")
    assert audited.after == {"plan": PLAN, "deployment": first.pk}
    assert AuditEvent.objects.filter(action="deployment.recovery", object_id=str(first.pk)).exists()

    # Still firing: neither the next evaluations nor the signal told again start it a second time.
    fail_checks(django_capture_on_commit_callbacks, times=2)
    alert_fired.send(sender=Alert, alert_id=alert.pk, rule_name=RULE, recovery_plan=PLAN, recovery_auto=True)
    assert firing_alert().pk == alert.pk
    assert recoveries() == [first] and AuditEvent.objects.filter(action="alert.recovery_run").count() == 1

    # It resolves, the plan's run ends, and it fires again: a new firing runs the plan again.
    fail_checks(django_capture_on_commit_callbacks, times=1, status="pass")
    Deployment.objects.filter(pk=first.pk).update(status=DeploymentStatus.SUCCEEDED, finished_at=timezone.now())
    fail_checks(django_capture_on_commit_callbacks)
    assert firing_alert().pk != alert.pk
    assert len(recoveries()) == 2 and AuditEvent.objects.filter(action="alert.recovery_run").count() == 2


def test_auto_refused_by_the_environment_s_lock_is_audited_with_why(plan, django_capture_on_commit_callbacks):
    busy = deployment_request(environment="runbook", version="v5", actor=SYSTEM)
    rule(recovery_plan=PLAN, recovery_auto=True)
    fail_checks(django_capture_on_commit_callbacks)
    assert recoveries() == []
    audited = AuditEvent.objects.get(action="alert.recovery_run")
    assert audited.after == {"plan": PLAN, "error": f"runbook is locked by deployment #{busy.pk} (queued)"}
    # Once per firing, even when refused: the next evaluation does not try again behind the operators' back.
    fail_checks(django_capture_on_commit_callbacks, times=1)
    assert AuditEvent.objects.filter(action="alert.recovery_run").count() == 1


def test_without_auto_the_alert_fires_and_nothing_runs(plan, django_capture_on_commit_callbacks):
    rule(recovery_plan=PLAN)
    fail_checks(django_capture_on_commit_callbacks)
    assert firing_alert().recovery_started_at is None
    assert recoveries() == [] and not AuditEvent.objects.filter(action="alert.recovery_run").exists()
