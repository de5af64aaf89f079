"""OFREP's evaluations counted per flag, environment and hour in process, and added to the hourly usage
rows by a flush (the flush thread's job; tests call it), together with what the SDKs report."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from controlplane.audit import Actor
from controlplane.services import api_token_create
from flags import usage
from flags.models import FlagUsage
from flags.services import flag_create, flags_import

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _no_counts_from_other_tests():
    usage.discard_pending()
    yield
    usage.discard_pending()


@pytest.fixture
def flags(db):
    actor = Actor.system("t")
    flag_create(data={"name": "half", "enabled": True, "rollout_percent": 50}, actor=actor)
    flag_create(data={"name": "off", "enabled": False}, actor=actor)
    flags_import(
        document={"flags": [{"name": "colour", "type": "string", "environments": {"production": {
            "enabled": True, "strategies": [{"kind": "default"}],
            "variants": [{"name": "red", "weight": 1, "value": "r"}, {"name": "blue", "weight": 1, "value": "b"}],
        }}}]},
        actor=actor,
    )  # fmt: skip


def _ofrep(client, token, path, context):
    return client.post(path, data=json.dumps({"context": context}), content_type="application/json",
                       HTTP_AUTHORIZATION=f"Bearer {token}")  # fmt: skip


def test_ofrep_evaluations_reach_the_hourly_rows_on_flush(flags, client, make_token):
    token = make_token("flags:read")
    for i in range(10):
        assert _ofrep(client, token, "/ofrep/v1/evaluate/flags", {"targetingKey": f"u{i}"}).status_code == 200
    assert _ofrep(client, token, "/ofrep/v1/evaluate/flags/off", {"targetingKey": "u1"}).status_code == 200
    # An error answer (no key for a partial rollout) evaluated nothing: not counted.
    assert _ofrep(client, token, "/ofrep/v1/evaluate/flags/half", {}).status_code == 400
    assert not FlagUsage.objects.exists()  # no write per request
    assert usage.flush() == 3
    rows = {row.flag: row for row in FlagUsage.objects.all()}
    assert rows["off"].yes == 0 and rows["off"].no == 11
    assert rows["half"].yes + rows["half"].no == 10
    assert rows["colour"].yes == 10 and sum(rows["colour"].variants.values()) == 10
    assert set(rows["colour"].variants) <= {"red", "blue"}
    hour = timezone.now().replace(minute=0, second=0, microsecond=0)
    assert {row.hour for row in rows.values()} == {hour}
    assert {row.environment.name for row in rows.values()} == {"production"}
    assert usage.flush() == 0  # nothing twice


def test_counts_go_to_the_tokens_environment_and_add_to_the_sdks(flags, client, make_token):
    _, staging = api_token_create(name="s", scopes=["flags:read"], environment="staging", actor=Actor.system("t"))
    _ofrep(client, staging, "/ofrep/v1/evaluate/flags/half", {"targetingKey": "u1"})
    usage.flush()
    assert FlagUsage.objects.get().environment.name == "staging"
    hour = timezone.now().replace(minute=0, second=0, microsecond=0)
    metrics = {"appName": "backend", "bucket": {"start": hour.isoformat(), "stop": hour.isoformat(),
               "toggles": {"half": {"yes": 5, "no": 7, "variants": {}}}}}  # fmt: skip
    response = client.post("/api/client/metrics", data=json.dumps(metrics), content_type="application/json",
                           HTTP_AUTHORIZATION=staging)  # fmt: skip
    assert response.status_code == 202
    row = FlagUsage.objects.get()
    assert row.yes + row.no == 13


def test_what_a_metrics_body_may_write_is_bounded(flags, client, make_token):
    """The metrics paths also take the browser's token: a bucket dated in the future counts as now, one
    from long ago as a day ago, and a toggle with too many variant names is refused, nothing stored."""
    token = make_token("flags:read")
    future = (timezone.now() + timedelta(days=400)).isoformat()

    def post(start, variants):
        body = {"appName": "web", "bucket": {"start": start, "stop": start,
                "toggles": {"half": {"yes": 1, "no": 0, "variants": variants}}}}  # fmt: skip
        return client.post("/api/client/metrics", data=json.dumps(body), content_type="application/json",
                           HTTP_AUTHORIZATION=token)  # fmt: skip

    assert post(future, {}).status_code == 202
    assert FlagUsage.objects.get().hour <= timezone.now()
    assert post("2001-01-01T00:00:00Z", {}).status_code == 202
    assert min(FlagUsage.objects.values_list("hour", flat=True)) >= timezone.now() - timedelta(days=1, hours=1)
    refused = post(future, {f"v{i}": 1 for i in range(usage.MAX_VARIANTS + 1)})
    assert refused.status_code == 400 and "at most 50 names" in refused.content.decode()
    assert sum(FlagUsage.objects.values_list("yes", flat=True)) == 2
