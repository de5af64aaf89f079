"""The flags page is a flag × environment matrix: one click turns a flag on or off in one environment,
a production environment asks first (enforced on the server); the flag's page explains, per
environment, why a pasted context gets the answer it gets."""

from __future__ import annotations

import html as htmllib
import json
import re

import pytest

from controlplane.audit import Actor
from controlplane.models import AuditEvent, Environment
from flags.models import Flag
from flags.services import flag_create, flag_state_set

pytestmark = pytest.mark.django_db
SYSTEM = Actor.system("tests")


def enabled_in(name: str) -> dict[str, bool]:
    flag = Flag.objects.get(name=name)
    return {state.environment.name: state.enabled for state in flag.states.select_related("environment")}


@pytest.fixture
def chat(db):
    flag = flag_create(data={"name": "chat", "enabled": True, "rollout_percent": 100}, actor=SYSTEM)
    flag_state_set(name="chat", environment="staging", state={"enabled": False}, actor=SYSTEM)
    return flag


def test_the_list_is_a_matrix_of_flags_and_environments(operator_client, chat):
    html = operator_client.get("/flags/").content.decode()
    heads = re.findall(r'<th scope="col">(\w+)', html)
    assert heads == [env.name for env in Environment.objects.all()] and "production" in heads
    production = re.search(r'id="flag-chat-production".*?</td>', html, re.S).group(0)
    staging = re.search(r'id="flag-chat-staging".*?</td>', html, re.S).group(0)
    assert "enabled" in production and 'aria-label="Disable chat in production"' in production
    assert "disabled" in staging and 'aria-label="Enable chat in staging"' in staging
    assert 'name="environment" value="staging"' in staging and "csrfmiddlewaretoken" in staging


def test_a_toggle_changes_only_its_environment_in_one_click_and_is_audited(operator_client, chat):
    before = enabled_in("chat")
    response = operator_client.post("/flags/chat/toggle", {"environment": "staging", "enabled": "1"})
    assert response.status_code == 302 and response["Location"] == "/flags/"
    after = enabled_in("chat")
    assert after["staging"] is True
    assert {k: v for k, v in after.items() if k != "staging"} == {k: v for k, v in before.items() if k != "staging"}
    event = AuditEvent.objects.filter(action="flag.toggle").get()
    assert event.actor_label == "operator" and event.after["environment"] == "staging"


def test_production_without_confirmation_changes_nothing(operator_client, chat):
    for data in ({"environment": "production", "enabled": "0"}, {"environment": "production"}, {"enabled": "0"}):
        for confirm in ({}, {"confirm": "no"}):
            response = operator_client.post("/flags/chat/toggle", {**data, **confirm})
            assert response.status_code == 200, data
            html = response.content.decode()
            assert "Turn off flag chat in production?" in html
            assert '<input type="hidden" name="confirm" value="yes">' in html
            assert '<input type="hidden" name="environment" value="production">' in html
    assert enabled_in("chat")["production"] is True
    assert not AuditEvent.objects.filter(action="flag.toggle").exists()


def test_turning_on_in_production_asks_too(operator_client, chat):
    flag_create(data={"name": "digest", "enabled": False, "rollout_percent": 100}, actor=SYSTEM)
    html = operator_client.post("/flags/digest/toggle", {"environment": "production", "enabled": "1"}).content.decode()
    assert "Turn on flag digest in production?" in html
    assert enabled_in("digest")["production"] is False


def test_a_confirmation_applies_it(operator_client, chat):
    data = {"environment": "production", "enabled": "0", "confirm": "yes", "next": "detail"}
    response = operator_client.post("/flags/chat/toggle", data)
    assert response.status_code == 302 and response["Location"] == "/flags/chat/"
    assert enabled_in("chat")["production"] is False and enabled_in("chat")["staging"] is False
    assert AuditEvent.objects.get(action="flag.toggle").actor_label == "operator"


def test_an_unknown_environment_changes_nothing(operator_client, chat):
    html = operator_client.post("/flags/chat/toggle", {"environment": "moon", "enabled": "0"}, follow=True)
    assert "No environment named moon." in html.content.decode()
    assert not AuditEvent.objects.filter(action="flag.toggle").exists()


def test_viewers_read_the_matrix_but_cannot_toggle(viewer_client, chat):
    html = viewer_client.get("/flags/").content.decode()
    assert 'id="flag-chat-staging"' in html and "/flags/chat/toggle" not in html
    response = viewer_client.post("/flags/chat/toggle", {"environment": "staging", "enabled": "1"})
    assert response.status_code == 403
    assert enabled_in("chat")["staging"] is False


def test_outsiders_get_nothing(outsider_client, chat):
    assert outsider_client.get("/flags/").status_code == 403
    assert outsider_client.post("/flags/chat/toggle", {"environment": "staging", "enabled": "1"}).status_code == 403
    assert enabled_in("chat")["staging"] is False


# --- Why is this user on? ----------------------------------------------------------------------------

PREMIUM = {"kind": "default", "constraints": [{"field": "plan", "operator": "IN", "values": ["premium"]}]}


@pytest.fixture
def coach(db):
    flag_create(data={"name": "coach", "enabled": True}, actor=SYSTEM)
    on_for_premium = {"enabled": True, "strategies": [PREMIUM]}
    flag_state_set(name="coach", environment="production", state=on_for_premium, actor=SYSTEM)
    flag_state_set(name="coach", environment="staging", state={"enabled": False}, actor=SYSTEM)


def why(client, context: str) -> str:
    response = client.get("/flags/coach/", {"context": context})
    assert response.status_code == 200
    return htmllib.unescape(response.content.decode())


def row(html: str, env: str) -> str:
    return re.search(rf'<tr id="why-{env}">.*?</tr>', html, re.S).group(0)


def test_why_shows_per_environment_the_value_and_what_decided_it(viewer_client, coach):
    html = why(viewer_client, json.dumps({"targetingKey": "user-1", "plan": "premium"}))
    production = row(html, "production")
    assert ">on<" in production and "<code>true</code>" in production and "#0" in production
    assert "its rule matched" in production or "constraint(s) matched" in production
    staging = row(html, "staging")
    assert ">off<" in staging and "the flag is disabled" in staging
    basic = row(why(viewer_client, json.dumps({"targetingKey": "user-1", "plan": "basic"})), "production")
    assert ">off<" in basic and "plan" in basic and "does not match" in basic


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        ('"user-1"', "must be a JSON object"),
        ('{"targetingKey": 5}', "targetingKey must be text"),
        ('{"currentTime": "yesterday"}', "cannot be used"),
    ],
    ids=["not-json", "array", "string", "numeric-key", "bad-time"],
)
def test_why_refuses_bad_input_clearly_and_changes_nothing(operator_client, coach, text, message):
    events = AuditEvent.objects.count()
    html = why(operator_client, text)
    error = re.search(r'<p class="error" role="alert" id="why-error">(.*?)</p>', html, re.S)
    assert error and message in error.group(1), html[-3000:]
    assert 'id="why-results"' not in html and text in html  # the text stays to be corrected
    assert AuditEvent.objects.count() == events
