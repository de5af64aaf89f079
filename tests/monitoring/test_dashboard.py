"""The dashboard at ``/``: the health score and what lowers it, tiles, charts, alerts with acknowledge,
deployments, backups and flags; its panels partial; a query count that does not grow with the data."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from alerting.models import Alert, AlertState
from alerting.services import rule_create
from backups.models import Backup, BackupStatus, BackupTarget, VerificationResult
from backups.services import target_create
from controlplane.audit import Actor
from controlplane.localcopy import forget_all
from controlplane.models import AuditEvent
from controlplane.status import STATUSES
from deployments.models import Deployment, DeploymentStatus, StepRun
from deployments.services import deployment_request, environment_save, pipeline_save
from flags.services import flag_create, flag_toggle
from monitoring.dashboard import CHART_CACHE_KEY, charts_refresh
from monitoring.models import HealthMetric, RequestRollup
from monitoring.request_metrics import discard_pending
from tests.deployments.conftest import echo

pytestmark = pytest.mark.django_db
SYSTEM = Actor.system("tests")


def metric(component, measurement, minutes_ago, value, status="pass", unit="ms", output="ok", *, now):
    return HealthMetric(
        time=now - timedelta(minutes=minutes_ago),
        component=component,
        measurement=measurement,
        value=value,
        unit=unit,
        status=status,
        output=output,
    )


def rollup(minute, view="flags:list", status_class="2xx", count=0, errors=0, **buckets):
    return RequestRollup(
        minute=minute, view=view, method="GET", status_class=status_class, count=count, errors=errors, **buckets
    )


def hour_minutes(now):
    """Two minutes of the last hour that fall in the same clock hour (the 24 h chart's grain), before now."""
    hour = now.replace(minute=0, second=0, microsecond=0)
    if now - hour >= timedelta(minutes=3):
        return hour, hour + timedelta(minutes=1)
    return hour - timedelta(minutes=2), hour - timedelta(minutes=1)


@pytest.fixture
def seeded(db, django_capture_on_commit_callbacks):
    now = timezone.now()
    HealthMetric.objects.bulk_create(
        [
            metric("database", "responseTime", 30, 12, now=now),
            metric("database", "responseTime", 20, 18, now=now),
            metric("database", "responseTime", 10, 15, now=now),
            metric("redis", "responseTime", 30, 3, now=now),
            metric("redis", "responseTime", 20, 4, now=now),
            metric("redis", "responseTime", 10, None, "fail", output="connection refused", now=now),
            metric("disk", "utilization", 30, 80, unit="percent", now=now),
            metric("disk", "utilization", 20, 85, unit="percent", now=now),
            metric("disk", "utilization", 10, 91, "warn", unit="percent", output="91% used", now=now),
            metric("disk", "inodes", 10, 40, unit="percent", now=now),
            # Older than the hour: neither a tile nor a deduction.
            metric("queue", "depth", 120, 5000, "fail", unit="", output="backlog", now=now),
        ]
    )
    first, second = hour_minutes(now)
    RequestRollup.objects.bulk_create(
        [
            rollup(first, count=50, le_25=50),
            rollup(second, count=100, le_50=100),
            rollup(second, status_class="5xx", count=20, errors=20, le_100=20),
            rollup((now - timedelta(hours=3)).replace(second=0, microsecond=0), count=30, le_10=30),
            rollup((now - timedelta(days=3)).replace(second=0, microsecond=0), count=40, le_5=40),
        ]
    )
    critical = rule_create(
        data={
            "name": "Redis down",
            "kind": "check_status",
            "component": "redis",
            "threshold": 1,
            "severity": "critical",
        },
        actor=SYSTEM,
    )
    slow = rule_create(data={"name": "Slow requests", "kind": "p95_latency_ms", "threshold": 500}, actor=SYSTEM)
    firing = Alert.objects.create(
        rule=critical,
        dedup_key="redis:responseTime",
        component="redis",
        measurement="responseTime",
        state=AlertState.FIRING,
        fired_at=now,
    )
    pending = Alert.objects.create(rule=slow, dedup_key="p95", state=AlertState.PENDING)
    pipeline = pipeline_save(name="web-pipeline", steps=[echo("migrate", "ok")], actor=SYSTEM)
    environment_save(name="web", pipeline=pipeline, actor=SYSTEM)
    deployment = deployment_request(environment="web", version="v42", actor=SYSTEM)  # queued: no worker here
    target_create(data={"name": "orders", "url_env": "ORDERS_DATABASE_URL"}, actor=SYSTEM)
    with django_capture_on_commit_callbacks(execute=True):
        flag_create(data={"name": "new_checkout", "enabled": True, "rollout_percent": 100}, actor=SYSTEM)
        flag_create(data={"name": "buddy_chat", "enabled": True, "rollout_percent": 30}, actor=SYSTEM)
        flag_create(data={"name": "dark_mode", "enabled": False}, actor=SYSTEM)
    return {"now": now, "firing": firing, "pending": pending, "deployment": deployment, "critical": critical}


def score(html: str) -> int:
    return int(re.search(r'<strong id="health-score">(\d+)</strong>', html).group(1))


def deductions(html: str) -> list[str]:
    block = re.search(r'<ul class="deductions">(.*?)</ul>', html, re.S)
    if block is None:
        return []
    return [re.sub(r"<[^>]+>", "", item).strip() for item in re.findall(r"<li>(.*?)</li>", block.group(1), re.S)]


def tile(html: str, component: str) -> str:
    return re.search(rf'<li class="tile tone-\w+" id="tile-{component}">(.*?)</li>', html, re.S).group(0)


def words(html: str) -> str:
    """What a reader sees: the text without tags, spaces collapsed."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html)).strip()


def pill(status: str, label: str, tone: str) -> str:
    return f'<span class="pill tone-{tone}" data-status="{status}">' + (
        f'<span class="pill-icon" aria-hidden="true">{STATUSES[status][1]}</span> {label}</span>'
    )


def alert_item(html: str, alert: Alert) -> str:
    return re.search(rf'<li id="alert-{alert.pk}".*?</li>', html, re.S).group(0)


def get(client, url: str = "/") -> str:
    discard_pending()  # no request of this test is flushed into the figures the page shows
    response = client.get(url)
    assert response.status_code == 200
    return response.content.decode()


@pytest.mark.parametrize("url", ["/", "/dashboard/panels"])
def test_dashboard_needs_login(client, url):
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"] == f"/accounts/login/?next={url}"


def test_score_and_what_lowers_it(operator_client, seeded):
    html = get(operator_client)
    # 100 - 20 (critical alert firing) - 15 (redis failing) - 5 (disk warning); the pending alert costs nothing.
    assert score(html) == 60
    assert 'class="panel score tone-bad"' in html  # a component fails: the score is not "fine" beside it
    assert deductions(html) == [
        "−20 alert firing: Redis down (critical)",
        "−15 redis response time: fail (connection refused)",
        "−5 Disk utilization: warn (91% used)",
    ]


def test_every_check_passing_and_no_alert_is_a_hundred(operator_client):
    now = timezone.now()
    HealthMetric.objects.bulk_create(
        metric(component, "x", 1, 1, now=now)
        for component in (
            "database",
            "cache",
            "broker",
            "celery-workers",
            "celery-beat",
            "disk",
            "migrations",
            "backups",
        )
    )
    html = get(operator_client)
    assert score(html) == 100
    assert "Nothing lowers it: every check passes and no alert fires." in html
    assert 'class="panel score tone-ok"' in html
    assert "waiting" not in words(html)


def test_tiles_show_status_in_words_worst_first_with_a_sparkline(operator_client, seeded):
    html = get(operator_client)
    order = re.findall(r'<li class="tile tone-(\w+)" id="tile-([\w-]+)">', html)
    # worst first; "queue" is too old; the built-in checks that have not reported yet say they wait
    assert order == [("bad", "redis"), ("warn", "disk"), ("ok", "database")] + [
        ("neutral", c) for c in ("cache", "broker", "celery-workers", "celery-beat", "migrations", "backups")
    ]

    redis = tile(html, "redis")
    assert pill("fail", "fail", "bad") in redis
    assert '<div class="tile-value">no answer</div>' in redis  # the failed check measured nothing
    assert '<polyline points="0.0,22.0 120.0,2.0"/>' in redis  # the two values it had
    assert "<title>redis, last hour: 2 checks, from 3 to 4 ms</title>" in redis
    assert 'title="connection refused">connection refused<br>' in redis

    disk = tile(html, "disk")  # the warning measurement wins over the passing one
    assert pill("warn", "warn", "warn") in disk
    assert '<div class="tile-value">utilization: 91 percent</div>' in disk
    assert '<polyline points="0.0,22.0 60.0,12.9 120.0,2.0"/>' in disk

    database = tile(html, "database")
    assert pill("pass", "pass", "ok") in database and "<strong>Database</strong>" in database
    assert '<div class="tile-value">answered in 15 ms</div>' in database
    assert '<polyline points="0.0,22.0 60.0,2.0 120.0,12.0"/>' in database

    backups = tile(html, "backups")
    assert pill("waiting", "waiting", "neutral") in backups and "waiting for its first check" in backups


@pytest.mark.parametrize(
    ("component", "measurement", "value", "unit", "figure"),
    [
        ("backups", "latestVerifiedAge", 3.2, "h", "latest verified backup: 3.2 h ago"),
        ("backups", "latestVerifiedAge", 0.25, "h", "latest verified backup: 15 min ago"),
        ("backups", "latestVerifiedAge", None, "h", "no verified backup yet"),
        ("celery-workers", "count", 2, "workers", "2 workers alive"),
        ("celery-workers", "count", 0, "workers", "no worker alive"),
        ("celery-beat", "heartbeatAge", 12.5, "s", "last heartbeat 12.5 s ago"),
        ("disk", "freePercent", 81.5, "%", "81.5 % free"),
        ("migrations", "unapplied", 0, "migrations", "all migrations applied"),
        ("migrations", "unapplied", 3, "migrations", "3 migrations not applied"),
        ("cache", "responseTime", None, "ms", "no answer"),
        ("sentry", "configured", 0, "", "not configured"),
        ("alert-channels", "enabled", 1, "channels", "1 channel enabled"),
        ("queue", "queueDepth", 7, "jobs", "queue depth: 7 jobs"),
    ],
)
def test_a_tile_says_its_figure_in_words(operator_client, component, measurement, value, unit, figure):
    HealthMetric.objects.create(component=component, measurement=measurement, value=value, unit=unit, status="pass")
    found = tile(get(operator_client), component)
    assert f'<div class="tile-value">{figure}</div>' in found
    assert not re.search(r"\b[a-z]+[A-Z]\w*", words(found)), "a camelCase identifier reached the tile"
    assert "—" not in found


def chart(html: str, name: str) -> str:
    return re.search(rf'<figure class="chart" id="chart-{name}">(.*?)</figure>', html, re.S).group(1)


def test_charts_show_the_figures_of_each_window(operator_client, seeded):
    html = get(operator_client)
    captions = {
        name: words(re.search(r"<figcaption>(.*?)</figcaption>", chart(html, name)).group(1))
        for name in ("1h", "24h", "7d")
    }
    assert captions == {
        "1h": "Last hour : 170 requests (2.83 per minute), p95 up to 85 ms, error rate 11.77 %",
        # both minutes of the last hour fall in one hour: 170 requests, p95 in the 50-100 ms bucket
        "24h": "Last 24 hours : 200 requests (0.14 per minute), p95 up to 79 ms, error rate 10 %",
        "7d": "Last 7 days : 240 requests (0.02 per minute), p95 up to 79 ms, error rate 8.33 %",
    }
    one_hour = chart(html, "1h")
    # value axes: 0, half and a round top above the highest p99 (97 ms) and the busiest minute (120)
    assert re.findall(r'<text class="value-label"[^>]*>([^<]+)</text>', one_hour) == [
        "0 ms", "50 ms", "100 ms", "0", "100", "200",
    ]  # fmt: skip
    # time axis: every quarter hour of the clock inside the window, on both charts
    ticks = re.findall(r'<text class="time-label"[^>]*>(\d\d:\d\d)</text>', one_hour)
    assert len(ticks) in (6, 8) and all(t[3:] in ("00", "15", "30", "45") for t in ticks)
    # each minute with requests: its figures under the pointer, its bar and its server errors
    first, second = hour_minutes(seeded["now"])
    assert (
        f"<title>{first:%H:%M}: 50 requests; p50 17.5 ms, p95 24.25 ms, p99 24.85 ms; error rate 0 %</title>"
        in one_hour
    )
    assert (
        f"<title>{second:%H:%M}: 120 requests; p50 40 ms, p95 85 ms, p99 97 ms; error rate 16.67 %</title>" in one_hour
    )
    assert len(re.findall(r'<rect class="bar"', one_hour)) == 2
    assert len(re.findall(r'<rect class="bar-errors"', one_hour)) == 1
    assert "top 1.00 %" not in html and "top 16.67 %" not in html
    assert cache.get(CHART_CACHE_KEY)["24h"], "the page computed the missing 24 h and 7 d figures into the cache"
    seven_days = re.findall(r'<text class="time-label"[^>]*>(Mon|Tue|Wed|Thu|Fri|Sat|Sun)</text>', chart(html, "7d"))
    assert len(seven_days) in (10, 12, 14)  # a label per day (but at the very edges) on each of the two charts


def test_no_requests_yet_says_so_with_both_axes(operator_client):
    html = get(operator_client)
    for name in ("1h", "24h", "7d"):
        found = chart(html, name)
        assert "no requests yet" in words(re.search(r"<figcaption>(.*?)</figcaption>", found).group(1))
        assert found.count('<text class="empty"') == 2
        assert re.findall(r'<text class="value-label"[^>]*>([^<]+)</text>', found)[:1] == ["0 ms"]
        assert re.search(r'<text class="time-label"', found)
    assert "top 1.00 %" not in html and "error rate" not in words(html)


def test_the_24_hour_and_7_day_charts_show_the_first_minute(operator_client):
    now = timezone.now()
    charts_refresh(now - timedelta(seconds=30))  # beat's last refresh, before the first request
    assert cache.get(CHART_CACHE_KEY)["24h"] == []
    RequestRollup.objects.create(
        minute=now.replace(second=0, microsecond=0),
        view="flags:list",
        method="GET",
        status_class="2xx",
        count=3,
        le_25=3,
    )
    html = get(operator_client)
    for name, per in (("1h", "minute"), ("24h", "hour"), ("7d", "hour")):
        found = chart(html, name)
        assert "3 requests" in words(re.search(r"<figcaption>(.*?)</figcaption>", found).group(1)), name
        assert len(re.findall(r'<rect class="bar"', found)) == 1, name
        assert len(re.findall(r'<circle class="p95"', found)) == 1, name  # a lone point is still drawn
        assert f"Requests per {per}" in found
        assert "no requests yet" not in found


def test_alerts_deployments_backups_and_flags(operator_client, seeded):
    html = get(operator_client)
    firing = alert_item(html, seeded["firing"])
    assert pill("firing", "firing", "bad") in firing and '<span class="muted">critical</span>' in firing
    assert "Redis down" in firing and "redis:responseTime" in firing
    assert 'aria-label="Acknowledge Redis down">Acknowledge</button>' in firing
    assert f'hx-post="/alerts/{seeded["firing"].pk}/acknowledge"' in firing
    assert pill("pending", "pending", "warn") in alert_item(html, seeded["pending"])

    deployment = seeded["deployment"]
    row = re.search(rf'<li id="dash-deployment-{deployment.pk}">(.*?)</li>', html, re.S).group(1)
    assert f"#{deployment.pk} web v42" in row and pill("queued", "queued", "running") in row

    backup = re.search(r'<li id="dash-backup-orders">(.*?)</li>', html, re.S).group(1)
    assert pill("no_backup_yet", "no verified backup yet", "neutral") in backup  # new: not late, not at risk
    assert "at risk" not in backup

    summary = re.search(r'<p id="flags-summary">(.*?)</p>', html).group(1)
    assert re.sub(r"<[^>]+>", "", summary) == "3 flags: 1 on, 1 partial, 1 off"
    assert "tests: flag.create dark_mode" in html


def test_the_deployments_panel_comes_from_the_registry_and_keeps_its_place(operator_client, db):
    """monitoring never imports deployments: deployments registers its panel (apps.py) and the dashboard
    renders what is registered, first in the row it shares with backups and flags."""
    from controlplane.panels import panels

    assert [panel.name for panel in panels()] == ["deployments"]
    html = get(operator_client)
    assert "No deployments yet." in html
    order = [html.index(f'id="{name}-title"') for name in ("deployments", "backups", "flags")]
    assert order == sorted(order)


def test_a_viewer_sees_the_alert_without_an_acknowledge_button(viewer_client, seeded):
    html = get(viewer_client)
    firing = alert_item(html, seeded["firing"])
    assert "Redis down" in firing
    assert "Acknowledge" not in html and "<form" not in firing


def test_a_viewer_cannot_acknowledge(viewer_client, seeded):
    alert = seeded["firing"]
    response = viewer_client.post(f"/alerts/{alert.pk}/acknowledge")
    assert response.status_code == 403
    alert.refresh_from_db()
    assert alert.acknowledged_at is None
    assert not AuditEvent.objects.filter(action="alert.acknowledge").exists()
    assert score(get(viewer_client)) == 60


def test_an_operator_acknowledges_and_the_alert_stops_lowering_the_score(operator_client, operator, seeded):
    alert = seeded["firing"]
    response = operator_client.post(f"/alerts/{alert.pk}/acknowledge", follow=True)
    assert response.redirect_chain == [("/", 302)]
    html = response.content.decode()
    assert "Alert Redis down acknowledged." in html

    alert.refresh_from_db()
    assert alert.acknowledged_by == operator and alert.acknowledged_at is not None
    event = AuditEvent.objects.get(action="alert.acknowledge")
    assert (event.actor_label, event.object_id) == ("operator", str(alert.pk))
    assert event.before["acknowledged_at"] is None and event.after["acknowledged_at"]

    html = get(operator_client)
    assert score(html) == 80
    assert not any("alert firing" in reason for reason in deductions(html))
    item = alert_item(html, alert)
    assert '<span class="muted">acknowledged</span>' in item and "<button" not in item


def test_an_htmx_acknowledge_answers_the_panels(operator_client, seeded):
    alert = seeded["firing"]
    response = operator_client.post(f"/alerts/{alert.pk}/acknowledge", headers={"HX-Request": "true"})
    assert response.status_code == 200
    assert [t.name for t in response.templates][0] == "dashboard/_panels.html"
    html = response.content.decode()
    assert "<html" not in html and score(html) == 80
    assert '<span class="muted">acknowledged</span>' in alert_item(html, alert)


def test_a_resolved_alert_cannot_be_acknowledged(operator_client, seeded):
    alert = seeded["firing"]
    Alert.objects.filter(pk=alert.pk).update(state=AlertState.RESOLVED, resolved_at=timezone.now())
    response = operator_client.post(f"/alerts/{alert.pk}/acknowledge", follow=True)
    assert "the alert is resolved; nothing to acknowledge" in response.content.decode()
    assert not AuditEvent.objects.filter(action="alert.acknowledge").exists()
    assert operator_client.post("/alerts/999999/acknowledge").status_code == 404


def test_the_panels_partial(operator_client, seeded):
    response = operator_client.get("/dashboard/panels")
    assert response.status_code == 200
    assert [t.name for t in response.templates][0] == "dashboard/_panels.html"
    html = response.content.decode()
    assert "<html" not in html and "<h1>Dashboard</h1>" not in html
    assert score(html) == 60 and 'id="tile-redis"' in html and 'id="flags-summary"' in html

    page = get(operator_client)
    assert 'hx-get="/dashboard/panels" hx-trigger="every 10s"' in page
    assert "htmx-2.min" in page and "htmx-csrf" in page


# --- Query count --------------------------------------------------------------------------------------


def dashboard_queries(client) -> tuple[int, str, list[str]]:
    """Queries of one cold view of ``/``: charts not cached, flags not loaded in this process."""
    cache.delete(CHART_CACHE_KEY)
    forget_all()
    with CaptureQueriesContext(connection) as queries:
        html = get(client)
    return len(queries), html, [q["sql"] for q in queries]


def add_ten_times_more(now, operator):
    HealthMetric.objects.bulk_create(
        metric(component, measurement, minute, minute % 7, status, now=now)
        for component in ("api", "frontend", "redis", "database", "celery")
        for measurement, status in (("responseTime", "pass"), ("connections", "warn"))
        for minute in range(1, 60)
    )
    minutes = [(now - timedelta(minutes=m)).replace(second=0, microsecond=0) for m in range(1, 60)]
    hours = [(now - timedelta(hours=h)).replace(second=0, microsecond=0) for h in range(2, 24 * 7)]
    RequestRollup.objects.bulk_create(
        rollup(minute, view=view, count=10, le_50=10)
        for minute in minutes + hours
        for view in ("deployments:index", "backups:index")
    )
    rules = [
        rule_create(
            data={"name": f"Check {n}", "kind": "check_status", "component": "*", "threshold": 1, "severity": severity},
            actor=SYSTEM,
        )
        for n, severity in enumerate(["critical", "warning", "info"])
    ]
    Alert.objects.bulk_create(
        Alert(
            rule=rules[n % 3],
            dedup_key=f"check:{n}",
            component=f"c{n}",
            state=AlertState.FIRING if n % 2 else AlertState.PENDING,
            acknowledged_at=now if n % 5 == 0 else None,
            acknowledged_by=operator if n % 5 == 0 else None,
        )
        for n in range(40)
    )
    environment = Deployment.objects.get().environment
    Deployment.objects.bulk_create(
        Deployment(
            environment=environment,
            version=f"v{n}",
            status=DeploymentStatus.SUCCEEDED,
            requested_by="tests",
            created_at=now - timedelta(hours=n + 1),
        )
        for n in range(30)
    )
    active = Deployment.objects.active().get()  # still the newest: its current step is read as before
    StepRun.objects.create(deployment=active, index=0, name="migrate", kind="command")
    for n in range(10):
        flag_create(data={"name": f"flag_{n}", "enabled": bool(n % 2), "rollout_percent": 10 * n}, actor=SYSTEM)
        flag_toggle(name=f"flag_{n}", changes=None, actor=SYSTEM)
    Backup.objects.bulk_create(
        Backup(
            target=BackupTarget.objects.get(name="orders"),
            status=BackupStatus.SUCCEEDED,
            engine="postgresql",
            started_at=now - timedelta(days=day, hours=1),
            verification=VerificationResult.PASSED,
        )
        for day in range(30)
    )
    AuditEvent.objects.bulk_create(
        AuditEvent(actor_type="system", actor_label="tests", action="flag.update", object_type="flags.flag")
        for _ in range(50)
    )


def test_the_number_of_queries_does_not_grow_with_the_data(operator_client, operator, seeded):
    few, _, few_sql = dashboard_queries(operator_client)
    add_ten_times_more(seeded["now"], operator)
    many, html, many_sql = dashboard_queries(operator_client)
    assert many == few, "\n".join(many_sql)
    # The page did show the larger data.
    assert len(re.findall(r'<li id="alert-\d+"', html)) == 20
    assert 'id="tile-celery"' in html and "step: migrate" in html
    assert "13 flags" in html and "orders</a> " + pill("ready", "ready", "ok") in html


# --- Every status on a page agrees with the others ------------------------------------------------------


def section(html: str, title_id: str) -> str:
    return re.search(rf'<section class="panel[^"]*" aria-labelledby="{title_id}">(.*?)</section>', html, re.S).group(1)


def test_a_fresh_install_waits_everywhere_and_claims_nothing(operator_client):
    target_create(data={"name": "orders", "url_env": "ORDERS_DATABASE_URL"}, actor=SYSTEM)
    html = get(operator_client)

    score_panel = section(html, "score-title")
    assert 'class="panel score tone-neutral"' in html
    assert "Waiting for the first checks" in score_panel
    assert 'id="health-score"' not in html and "100" not in score_panel and "✓" not in score_panel
    assert "every check passes" not in html

    components = section(html, "tiles-title")
    assert pill("waiting", "waiting", "neutral") in components and "Waiting for the first checks" in components
    assert 'class="tile' not in components

    backups = section(html, "backups-title")
    assert backups.count(pill("no_backup_yet", "no verified backup yet", "neutral")) == len(
        re.findall(r'<li id="dash-backup-', backups)
    )
    assert "at risk" not in html and "ready" not in words(backups)

    page = operator_client.get("/backups/").content.decode()
    row = words(re.search(r'<tr id="target-orders">(.*?)</tr>', page, re.S).group(1))
    assert "no verified backup yet" in row and "nothing verified yet" in row and "first backup not due yet" in row
    assert "complete" not in row and "at risk" not in row and "missed" not in row
    detail = operator_client.get("/backups/orders/").content.decode()
    assert pill("no_backup_yet", "no verified backup yet", "neutral") in detail and "at risk" not in detail


def test_once_some_checks_ran_the_score_speaks_for_those_and_the_rest_wait(operator_client):
    target_create(data={"name": "orders", "url_env": "ORDERS_DATABASE_URL"}, actor=SYSTEM)
    now = timezone.now()
    HealthMetric.objects.bulk_create(
        [
            metric("database", "responseTime", 1, 3, now=now),
            metric("backups", "latestVerifiedAge", 1, None, unit="h", output="orders: no verified backup yet", now=now),
        ]
    )
    html = get(operator_client)
    assert score(html) == 100 and 'class="panel score tone-ok"' in html
    assert "Nothing lowers it: the 2 components checked so far pass (6 not checked yet) and no alert fires." in html
    assert "every check passes" not in html
    # the backups check passes a new target, and the backups panel says the same thing in the same words
    assert pill("pass", "pass", "ok") in tile(html, "backups")
    assert "no verified backup yet" in tile(html, "backups")
    assert pill("no_backup_yet", "no verified backup yet", "neutral") in section(html, "backups-title")
    assert "at risk" not in html


def test_a_failing_component_makes_the_score_say_so_whatever_the_number(operator_client):
    now = timezone.now()
    HealthMetric.objects.bulk_create(
        [
            metric("database", "responseTime", 1, 3, now=now),
            metric("disk", "freePercent", 1, 4, "fail", unit="%", output="4 % free", now=now),
        ]
    )
    html = get(operator_client)
    assert score(html) == 85
    assert 'class="panel score tone-bad"' in html and '<span class="icon" aria-hidden="true">✕</span>' in html
    assert pill("fail", "fail", "bad") in tile(html, "disk") and "4 % free" in tile(html, "disk")
