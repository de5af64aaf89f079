"""What the usage counts show: a flag's last evaluation and 30-day chart on its page, the stale list an
owner works through, and the SDK instances."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from controlplane.audit import Actor
from controlplane.models import Environment
from flags.models import Flag, FlagState, FlagUsage, SdkInstance
from flags.services import flag_create, flags_import

pytestmark = pytest.mark.django_db


def _flag(name: str, *, owner: str = "", rollout: int = 0, enabled: bool = True, age_days: int = 40) -> Flag:
    flag = flag_create(
        data={"name": name, "enabled": enabled, "rollout_percent": rollout, "owner": owner}, actor=Actor.system("t")
    )
    then = timezone.now() - timedelta(days=age_days)
    Flag.objects.filter(pk=flag.pk).update(created=then)
    FlagState.objects.filter(flag=flag).update(modified=then)
    return flag


def _used(name: str, days_ago: float, environment: str = "production", n: int = 3) -> None:
    hour = (timezone.now() - timedelta(days=days_ago)).replace(minute=0, second=0, microsecond=0)
    FlagUsage.objects.create(flag=name, environment=Environment.objects.get(name=environment), hour=hour, yes=n, no=1)


def test_the_flag_page_shows_the_last_evaluation_and_30_days(viewer, client):
    _flag("chat", rollout=50)
    client.force_login(viewer)
    assert "never-evaluated" in client.get("/flags/chat/").content.decode()
    _used("chat", 0.1)
    _used("chat", 3, environment="staging", n=9)
    _used("chat", 45)  # before the chart's 30 days
    page = client.get("/flags/chat/").content.decode()
    assert "Last evaluated" in page and "production:" in page and "staging:" in page
    assert "14 evaluations in the last 30 days" in page
    assert page.count("<rect ") == 30 and "evaluations</title>" in page


def test_stale_flags_unused_or_on_for_everyone_for_30_days(viewer, client):
    _flag("forgotten", owner="ana")  # never evaluated, made 40 days ago
    _flag("used", owner="ana")
    _used("used", 2)
    _flag("young", age_days=3)  # too new to be unused
    everyone = {"enabled": True, "strategies": [{"kind": "default"}], "variants": []}
    envs = {name: everyone for name in Environment.objects.values_list("name", flat=True)}
    document = {"flags": [{"name": "everywhere", "owner": "bo", "environments": envs}]}
    flags_import(document=document, actor=Actor.system("t"))
    _used("everywhere", 1)
    FlagState.objects.filter(flag__name="everywhere").update(modified=timezone.now() - timedelta(days=35))
    client.force_login(viewer)
    page = client.get("/flags/usage/stale/").content.decode()
    assert 'id="stale-forgotten"' in page and "never evaluated" in page
    assert 'id="stale-everywhere"' in page and "on for everyone in every environment since" in page
    assert 'id="stale-used"' not in page and 'id="stale-young"' not in page
    only_bo = client.get("/flags/usage/stale/", {"owner": "bo"}).content.decode()
    assert 'id="stale-everywhere"' in only_bo and 'id="stale-forgotten"' not in only_bo
    # A change restarts the clock.
    FlagState.objects.filter(flag__name="everywhere", environment__name="staging").update(modified=timezone.now())
    assert 'id="stale-everywhere"' not in client.get("/flags/usage/stale/").content.decode()


def test_the_sdk_instances_are_listed(viewer, client):
    SdkInstance.objects.create(
        environment=Environment.objects.get(name="staging"),
        app_name="wingmanmatch-backend",
        instance_id="pod-7",
        sdk_version="unleash-python-sdk:6.9.1",
    )
    client.force_login(viewer)
    page = client.get("/flags/usage/sdks/").content.decode()
    assert "wingmanmatch-backend" in page and "pod-7" in page and "unleash-python-sdk:6.9.1" in page
    assert "staging" in page
