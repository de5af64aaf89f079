"""waffle's own entry points (flag_is_active, the {% flag %} tag, the waffle_flag decorator) answer
from the in-process snapshot with the control plane's rule: no query once warm, and the last snapshot
when the shared cache is down."""

from __future__ import annotations

import pytest
import waffle
from django.http import Http404, HttpResponse
from django.template import Context, Template
from waffle.decorators import waffle_flag

from controlplane.audit import Actor
from flags.evaluation import bucket
from flags.models import Flag
from flags.services import flag_create, flag_update

pytestmark = pytest.mark.django_db
SYSTEM = Actor.system("tests")
TAG = Template('{% load waffle_tags %}{% flag "chat" %}on{% else %}off{% endflag %}')


@waffle_flag("chat")
def chat_view(request):
    return HttpResponse("chat")


@pytest.fixture
def chat(django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        flag_create(data={"name": "chat", "enabled": True, "rollout_percent": 100}, actor=SYSTEM)


@pytest.fixture
def request_as_operator(rf, operator):
    request = rf.get("/")
    request.user = operator
    return request


def test_warm_entry_points_make_no_query(chat, request_as_operator, django_assert_num_queries):
    assert waffle.flag_is_active(request_as_operator, "chat") is True  # warms the snapshot
    with django_assert_num_queries(0):
        assert waffle.flag_is_active(request_as_operator, "chat") is True
        assert waffle.flag_is_active(request_as_operator, "missing") is False
        assert TAG.render(Context({"request": request_as_operator})) == "on"
        assert chat_view(request_as_operator).content == b"chat"


def test_entry_points_follow_changes_and_the_rule(chat, request_as_operator, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        flag_update(name="chat", changes={"rollout_percent": 50}, actor=SYSTEM)
    expected = bucket("chat", str(request_as_operator.user.pk)) <= 50
    assert waffle.flag_is_active(request_as_operator, "chat") is expected
    with django_capture_on_commit_callbacks(execute=True):
        flag_update(name="chat", changes={"enabled": False}, actor=SYSTEM)
    assert waffle.flag_is_active(request_as_operator, "chat") is False
    assert TAG.render(Context({"request": request_as_operator})) == "off"
    with pytest.raises(Http404):
        chat_view(request_as_operator)


def test_the_flag_waffle_is_given_carries_the_stored_settings(chat):
    flag = Flag.get("chat")
    assert (flag.name, flag.enabled, flag.rollout_percent) == ("chat", True, 100)
    assert Flag.get("missing").pk is None


def test_entry_points_keep_serving_when_redis_stops(chat, request_as_operator, caplog, private_redis_cache):
    server, _ = private_redis_cache
    assert waffle.flag_is_active(request_as_operator, "chat") is True
    server.kill()
    server.wait()
    assert waffle.flag_is_active(request_as_operator, "chat") is True
    assert TAG.render(Context({"request": request_as_operator})) == "on"
    assert chat_view(request_as_operator).content == b"chat"
    assert any("shared cache unreachable" in r.getMessage() for r in caplog.records)
