"""What changed, on the charts: a deployment's start, rollback and end and a flag change are drawn on the
control plane's request charts and on a service's sparkline (what, who and when in each marker's <title>),
and said in a visually-hidden text beside them; a dry run, a request and a scheduled change are not."""

from __future__ import annotations

import html as html_lib
import re
from datetime import timedelta

import pytest
from django.core.cache import cache
from django.utils import timezone

from controlplane.audit import Actor
from controlplane.changes import changes_between
from controlplane.models import AuditEvent
from deployments.runner import run
from deployments.services import deployment_request, environment_save, pipeline_save
from flags.services import flag_create, flag_update
from monitoring.dashboard import CHART_CACHE_KEY
from monitoring.request_metrics import discard_pending
from tests.monitoring.service_data import add_minutes, make_service

pytestmark = pytest.mark.django_db(transaction=True)
ALICE = Actor.system("alice")
QUICK = [{"name": "pause", "kind": "wait", "seconds": 0}]
FAILING = [
    {"name": "pause", "kind": "wait", "seconds": 0, "rollback": {"name": "undo", "kind": "wait", "seconds": 0}},
    {"name": "break", "kind": "command", "argv": ["{python}", "-c", "raise SystemExit(3)"]},
]


@pytest.fixture(autouse=True)
def _no_chart_cache():
    cache.delete(CHART_CACHE_KEY)
    yield
    cache.delete(CHART_CACHE_KEY)


def dashboard(client) -> str:
    discard_pending()
    response = client.get("/")
    assert response.status_code == 200
    return html_lib.unescape(response.content.decode())


def chart(html: str, name: str) -> str:
    return re.search(rf'<figure class="chart" id="chart-{name}">(.*?)</figure>', html, re.S).group(1)


def plot(fragment: str, which: str) -> str:
    """One of a chart's two plots: "latency" or "requests"."""
    return re.search(rf'<svg class="{which}"(.*?)</svg>', fragment, re.S).group(1)


def markers(fragment: str) -> list[tuple[str, str]]:
    """(kind, title) of every change marker in an HTML fragment."""
    return re.findall(r'<g class="change change-(\w+)"><title>(.*?)</title>', fragment)


def hidden_text(fragment: str) -> list[str]:
    found = re.search(r'class="visually-hidden changes-text"[^>]*>(.*?)</(?:div|ul)>', fragment, re.S)
    return re.findall(r"<li>(.*?)</li>", found.group(1))


def deploy_and_run(version: str, steps) -> int:
    pipeline = pipeline_save(name="charts-pipeline", steps=steps, actor=ALICE)
    environment_save(name="charts", pipeline=pipeline, actor=ALICE)
    deployment = deployment_request(environment="charts", version=version, actor=ALICE)
    run(deployment.pk)
    return deployment.pk


def test_a_deployment_and_a_flag_change_are_marked_on_the_request_charts_and_said_in_text(operator_client):
    number = deploy_and_run("v7", QUICK)
    flag_create(data={"name": "new_checkout", "enabled": False}, actor=ALICE)
    flag_update(name="new_checkout", changes={"enabled": True}, actor=ALICE, action="flag.toggle")

    html = dashboard(operator_client)

    for name in ("1h", "24h", "7d"):
        shown = markers(plot(chart(html, name), "latency"))
        words = [title.split(" ", 2)[2] for _, title in shown]  # without the date and time
        assert words == [
            f"deployment #{number} of v7 to charts: started, by deployment runner",
            f"deployment #{number} of v7 to charts: succeeded, by deployment runner",
            "flag new_checkout in production: created (off, rollout 0 %), by alice",
            "flag new_checkout in production: turned on, by alice",
        ], name
        assert [kind for kind, _ in shown] == ["deployment"] * 2 + ["flag"] * 2
        # The same markers on the requests plot, and the same words in the text a screen reader reads.
        assert markers(plot(chart(html, name), "requests")) == shown
        assert hidden_text(chart(html, name)) == [title for _, title in shown]
    when = timezone.localtime(AuditEvent.objects.get(action="flag.toggle").time).strftime("%Y-%m-%d %H:%M")
    assert f"{when} flag new_checkout in production: turned on, by alice" in chart(html, "1h")


def test_a_rollback_is_marked_where_it_started_and_where_it_ended(operator_client):
    number = deploy_and_run("v8", FAILING)
    titles = [title for _, title in markers(plot(chart(dashboard(operator_client), "1h"), "latency"))]
    assert [t.split(": ", 1)[1] for t in titles] == [
        "started, by deployment runner",
        "rolling back, by deployment runner",
        "rolled back, by deployment runner",
    ]
    assert all(f"deployment #{number} of v8 to charts" in t for t in titles)


def test_a_service_sparkline_marks_the_hour_s_changes_with_a_text_alternative(operator_client):
    service = make_service("checkout-api")
    add_minutes(service, minutes=50)
    flag_create(data={"name": "fast_search", "enabled": True}, actor=ALICE)

    html = dashboard(operator_client)

    row = re.search(r'<tr id="service-checkout-api"[^>]*>(.*?)</tr>', html, re.S).group(1)
    shown = markers(row)
    assert [(kind, title.split(" ", 2)[2]) for kind, title in shown] == [
        ("flag", "flag fast_search in production: created (on, rollout 0 %), by alice")
    ]
    assert hidden_text(row) == [shown[0][1]]
    x = float(re.search(r'<g class="change change-flag"><title>.*?</title><line x1="([\d.]+)"', row).group(1))
    assert 110 <= x <= 120  # now, at the right-hand end of the hour


def test_a_change_older_than_the_hour_is_on_the_longer_charts_only(operator_client):
    flag_create(data={"name": "old_banner", "enabled": True}, actor=ALICE)
    AuditEvent.objects.filter(action="flag.create").update(time=timezone.now() - timedelta(hours=3))
    html = dashboard(operator_client)
    assert markers(chart(html, "1h")) == []
    assert "No change over the last hour." in chart(html, "1h")
    assert len(markers(plot(chart(html, "24h"), "latency"))) == len(markers(plot(chart(html, "7d"), "latency"))) == 1


def test_dry_runs_requests_and_schedules_are_not_changes():
    pipeline = pipeline_save(name="charts-pipeline", steps=QUICK, actor=ALICE)
    environment_save(name="charts", pipeline=pipeline, actor=ALICE)
    dry = deployment_request(environment="charts", version="v9", actor=ALICE, dry_run=True)
    run(dry.pk)
    queued = deployment_request(environment="charts", version="v10", actor=ALICE)  # requested, never run
    assert AuditEvent.objects.filter(action__startswith="deployment.").count() == 4  # dry: 3 events; queued: 1
    now = timezone.now()
    assert changes_between(now - timedelta(hours=1), now + timedelta(seconds=1)) == []
    assert queued.pk


def test_an_slo_s_budget_chart_marks_the_changes_of_its_window(viewer_client):
    from tests.monitoring.slo_data import Traffic, make_slo
    from tests.monitoring.slo_data import make_service as make_slo_service

    service = make_slo_service()
    make_slo(service, name="availability")
    now = timezone.now().replace(second=0, microsecond=0)
    Traffic().add(now - timedelta(days=2), now, errors=0.001).save(service, now + timedelta(hours=1))
    number = deploy_and_run("v11", QUICK)
    AuditEvent.objects.filter(action="deployment.started").update(time=timezone.now() - timedelta(days=1))

    html = html_lib.unescape(viewer_client.get(f"/slo/{service.name}/availability/").content.decode())

    figure = re.search(r'<figure class="chart budget-chart" id="budget-chart">(.*?)</figure>', html, re.S).group(1)
    shown = [title.split(" ", 2)[2] for _, title in markers(figure)]
    assert shown == [
        f"deployment #{number} of v11 to charts: started, by deployment runner",
        f"deployment #{number} of v11 to charts: succeeded, by deployment runner",
    ]
    assert [t.split(" ", 2)[2] for t in hidden_text(figure)] == shown
    lines = re.findall(r'<g class="change change-deployment"><title>.*?</title><line x1="([\d.]+)"', figure)
    xs = [float(x) for x in lines]
    assert xs[0] < xs[1]  # a day ago, then now: the start is drawn to the left of the end
