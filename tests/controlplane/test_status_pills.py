"""One status vocabulary: every status of every app renders as a pill with a tone, an icon and words,
on the pages (``{% status_pill %}``) and in the admin (``admin_status``), the same markup in both."""

from __future__ import annotations

import importlib
import re

import pytest
from django.apps import apps
from django.db import models
from django.template import Context, Template

from controlplane.status import STATUSES, TONES, status_pill

OUR_APPS = ("controlplane", "flags", "monitoring", "alerting", "backups", "deployments")
# A choices class whose name ends so holds a status someone reads at a glance.
STATUS_NAMES = re.compile(r"(Status|State|Result|Level|Severity)$")


def status_choices() -> list[type[models.TextChoices]]:
    """Every status-like TextChoices defined in our apps' modules, found by walking them, so a new one
    is checked without anyone listing it here."""
    for label in OUR_APPS:
        config = apps.get_app_config(label)
        importlib.import_module(f"{config.name}.models")
    found = []
    pending = list(models.TextChoices.__subclasses__())
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if cls.__module__.split(".")[0] in OUR_APPS and STATUS_NAMES.search(cls.__name__):
            found.append(cls)
    return sorted(found, key=lambda c: f"{c.__module__}.{c.__name__}")


CHOICES = status_choices()
CASES = [(cls.__name__, value, label) for cls in CHOICES for value, label in cls.choices]


def test_the_walk_finds_the_statuses_of_every_part():
    names = {cls.__name__ for cls in CHOICES}
    assert {
        "DeploymentStatus", "StepStatus", "LogLevel", "BackupStatus", "VerificationResult", "Status",
        "AlertState", "DeliveryStatus", "Severity",
    } <= names  # fmt: skip
    assert len(CASES) >= 35


@pytest.mark.parametrize(("choices", "value", "label"), CASES, ids=[f"{c}:{v or 'empty'}" for c, v, _ in CASES])
def test_every_status_renders_with_a_tone_an_icon_and_its_words(choices, value, label):
    html = Template("{% load status %}{% status_pill value label %}").render(Context({"value": value, "label": label}))
    found = re.fullmatch(
        r'<span class="pill tone-(\w+)" data-status="(\w*)">'
        r'<span class="pill-icon" aria-hidden="true">(.+?)</span> (.+)</span>',
        html,
    )
    assert found, html
    tone, status, icon, words = found.groups()
    assert tone in TONES, f"{choices}.{value or '(empty)'} has no tone: add it to controlplane.status.STATUSES"
    assert (status, icon, words) == (value, STATUSES[value][1], label)
    assert html == status_pill(value, label)  # the admin's helper renders the very same markup


def test_a_value_nobody_mapped_is_marked_unknown_not_passed_off_as_neutral():
    html = status_pill("exploded")
    assert 'class="pill tone-unknown"' in html and "exploded" in html


def test_the_words_are_escaped():
    assert "<b>" not in status_pill("failed", "<b>boom</b>")


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("/admin/deployments/deployment/", 'class="pill tone-running" data-status="queued"'),
        ("/admin/deployments/logline/", 'class="pill tone-neutral" data-status="info"'),
        ("/admin/alerting/alert/", 'class="pill tone-bad" data-status="firing"'),
        ("/admin/monitoring/healthmetric/", 'class="pill tone-bad" data-status="fail"'),
        ("/admin/backups/backup/", 'class="pill tone-ok" data-status="succeeded"'),
    ],
)
def test_the_admin_lists_show_the_same_pills_with_their_stylesheet(operator_client, url, needle):
    from alerting.models import Alert, AlertState
    from alerting.services import rule_create
    from backups.models import Backup, BackupStatus, BackupTarget
    from controlplane.audit import Actor
    from deployments.services import deployment_request, environment_save, pipeline_save
    from monitoring.models import HealthMetric
    from tests.deployments.conftest import echo

    system = Actor.system("tests")
    pipeline = pipeline_save(name="p", steps=[echo("one", "1")], actor=system)
    environment_save(name="web", pipeline=pipeline, actor=system)
    deployment_request(environment="web", version="v1", actor=system)
    rule = rule_create(data={"name": "Down", "kind": "check_status", "component": "db", "threshold": 1}, actor=system)
    Alert.objects.create(rule=rule, dedup_key="db", state=AlertState.FIRING)
    HealthMetric.objects.create(component="db", measurement="responseTime", status="fail")
    target = BackupTarget.objects.create(name="orders", url_env="ORDERS_DATABASE_URL")
    Backup.objects.create(target=target, status=BackupStatus.SUCCEEDED, engine="postgresql")

    html = operator_client.get(url).content.decode()
    assert needle in html
    assert re.search(r'href="/static/css/admin-status\.[0-9a-f]+\.css"', html)
