"""Scoped API tokens: made by command or admin, stored hashed, checked by the one API helper."""

from __future__ import annotations

import io
import subprocess
import time
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from controlplane.audit import Actor
from controlplane.localcopy import forget_all
from controlplane.models import ApiToken, AuditEvent
from controlplane.services import InvalidTokenRequest, api_token_create, api_token_revoke
from tests.conftest import free_port, manage, subprocess_env

URL = "/api/deployment/config/production"
pytestmark = pytest.mark.django_db


def create(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("create_api_token", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_command_prints_the_token_alone_and_stores_only_its_hash():
    out, err = create("ci", "--scopes", "flags:read,monitoring:read", "--expires-in-days", "30")
    raw = out.strip()
    assert out == raw + "\n" and raw.startswith("cpt_") and len(raw) > 40
    token = ApiToken.objects.get()
    assert token.scopes == ["flags:read", "monitoring:read"]
    assert token.token_hash == ApiToken.hash(raw) and raw not in token.token_hash
    assert raw.startswith(token.prefix) and len(token.prefix) < 16
    assert timedelta(days=29) < token.expires_at - timezone.now() <= timedelta(days=30)
    assert raw not in err  # stderr names the token by its prefix only
    assert not ApiToken.objects.filter(name=raw).exists()
    event = AuditEvent.objects.get(action="api_token.create")
    assert raw not in str(event.after) and event.actor_type == "system"


def test_command_output_works_in_a_shell_substitution(tmp_path):
    python, manage_py = manage()
    script = f"""
set -e
{python} {manage_py} migrate --verbosity 0
TOKEN=$({python} {manage_py} create_api_token ci --scopes deploy 2>/dev/null)
export TOKEN
{python} {manage_py} shell --verbosity 0 -c "
import os; from controlplane.models import ApiToken
print(ApiToken.objects.filter(token_hash=ApiToken.hash(os.environ['TOKEN'])).count())"
"""
    result = subprocess.run(
        ["bash", "-c", script],
        env=subprocess_env(CONTROLPLANE_VAR_DIR=str(tmp_path), DATABASE_URL=None),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "1"


def test_command_stdout_is_the_token_alone_even_when_the_cache_is_down(tmp_path):
    """Log lines (here: the token list's version could not be published) go to stderr, not stdout."""
    port = free_port()  # nothing listens there: Redis is "down"
    env = subprocess_env(
        CONTROLPLANE_VAR_DIR=str(tmp_path),
        DATABASE_URL=None,
        CELERY_BROKER_URL=None,
        LOG_FORMAT="json",
        REDIS_URL=f"redis://127.0.0.1:{port}/0",
    )
    subprocess.run([*manage(), "migrate", "--verbosity", "0"], env=env, check=True, timeout=120)
    result = subprocess.run(
        [*manage(), "create_api_token", "ci", "--scopes", "deploy"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().startswith("cpt_") and len(result.stdout.strip().splitlines()) == 1
    assert "could not publish" in result.stderr  # the fault is still told, on stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ci", "--scopes", "flags:read,admin"], "unknown scope admin"),
        (["ci", "--scopes", " , "], "at least one"),
        (["ci", "--scopes", "deploy", "--expires-in-days", "0"], "expires_in_days"),
        (["", "--scopes", "deploy"], "name"),
    ],
)
def test_command_refuses_bad_input_and_changes_nothing(args, message):
    with pytest.raises(CommandError, match=message):
        create(*args)
    assert not ApiToken.objects.exists() and not AuditEvent.objects.exists()


def test_no_token_is_401_with_json(client):
    response = client.get(URL)
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"
    assert response["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    "header",
    ["Bearer cpt_not-a-real-token-at-all-000000000", "Basic dXNlcjpwYXNz", "Bearer", "Bearer    ", "cpt_raw"],
)
def test_unknown_or_malformed_token_is_401(client, header):
    response = client.get(URL, HTTP_AUTHORIZATION=header)
    assert response.status_code == 401 and response.json()["error"] == "unauthorized"


def test_token_without_the_scope_is_403_naming_it(client, make_token):
    raw = make_token("flags:read")
    response = client.get(URL, HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert response.status_code == 403
    assert response.json() == {
        "error": "forbidden",
        "detail": "the token lacks the scope monitoring:read",
        "scope": "monitoring:read",
    }


def test_bearer_and_x_api_key_are_accepted_and_use_is_recorded(client, make_token):
    raw = make_token("monitoring:read")
    assert client.get(URL, HTTP_AUTHORIZATION=f"Bearer {raw}").status_code == 200
    assert client.get(URL, HTTP_X_API_KEY=raw).status_code == 200
    assert ApiToken.objects.get().last_used_at is not None


def test_a_warm_token_check_makes_no_query(client, make_token, django_assert_num_queries):
    raw = make_token("flags:read")
    url = "/api/deployment/features/user-1"  # answered from the flags snapshot: no query of its own
    client.get(url, HTTP_AUTHORIZATION=f"Bearer {raw}")  # loads the tokens, records the use
    with django_assert_num_queries(0):  # tokens from the process's copy; use recorded once a minute
        assert client.get(url, HTTP_AUTHORIZATION=f"Bearer {raw}").status_code == 200


@pytest.mark.parametrize("name", ["token", "api_key", "access_token"])
def test_token_in_the_query_string_is_refused_even_with_a_header(client, make_token, name):
    raw = make_token("monitoring:read")
    response = client.get(f"{URL}?{name}={raw}", HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert response.status_code == 400
    assert response.json()["error"] == "token_in_query_string"


def test_expired_and_revoked_tokens_are_refused(client, make_token, django_capture_on_commit_callbacks):
    expired = make_token("monitoring:read", name="old", expires_in_days=1)
    ApiToken.objects.filter(name="old").update(expires_at=timezone.now() - timedelta(seconds=1))
    assert client.get(URL, HTTP_AUTHORIZATION=f"Bearer {expired}").status_code == 401

    revoked = make_token("monitoring:read", name="leaked")
    forget_all()
    assert client.get(URL, HTTP_AUTHORIZATION=f"Bearer {revoked}").status_code == 200
    token = ApiToken.objects.get(name="leaked")
    with django_capture_on_commit_callbacks(execute=True):
        api_token_revoke(token=token, actor=Actor.system())
    api_token_revoke(token=token, actor=Actor.system())  # twice changes nothing more
    # The revocation reached this process's copy of the tokens (the bump after commit).
    assert client.get(URL, HTTP_AUTHORIZATION=f"Bearer {revoked}").status_code == 401
    events = AuditEvent.objects.filter(action="api_token.revoke")
    assert events.count() == 1
    assert events.get().before["revoked_at"] is None and events.get().after["revoked_at"]


def test_service_refuses_unknown_scope():
    with pytest.raises(InvalidTokenRequest) as error:
        api_token_create(name="x", scopes=["nope"], actor=Actor.system())
    assert error.value.field == "scopes"


def test_operator_makes_a_token_in_admin_and_sees_it_once(operator_client):
    response = operator_client.post(
        "/admin/controlplane/apitoken/add/",
        {"name": "wingmanmatch-backend", "scopes": ["flags:read"], "expires_in_days": ""},
    )
    assert response.status_code == 200
    html = response.content.decode()
    token = ApiToken.objects.get(name="wingmanmatch-backend")
    raw = html.split('<code id="api-token">')[1].split("</code>")[0]
    assert token.token_hash == ApiToken.hash(raw)
    # Afterwards only the prefix shows.
    listing = operator_client.get("/admin/controlplane/apitoken/").content.decode()
    assert token.prefix in listing and raw not in listing
    detail = operator_client.get(f"/admin/controlplane/apitoken/{token.pk}/change/").content.decode()
    assert raw not in detail
    event = AuditEvent.objects.get(action="api_token.create")
    assert event.actor_label == "operator" and event.request_id


def test_operator_revokes_in_admin(operator_client, make_token):
    raw = make_token("deploy", name="ci")
    token = ApiToken.objects.get(name="ci")
    operator_client.post(
        "/admin/controlplane/apitoken/", {"action": "revoke", "_selected_action": [token.pk]}, follow=True
    )
    token.refresh_from_db()
    assert token.is_revoked
    assert AuditEvent.objects.get(action="api_token.revoke").actor_label == "operator"
    assert raw  # the token existed before it was revoked


def test_admin_cannot_delete_tokens(operator_client, make_token):
    make_token("deploy", name="ci")
    token = ApiToken.objects.get(name="ci")
    assert operator_client.get(f"/admin/controlplane/apitoken/{token.pk}/delete/").status_code == 403


def test_a_revocation_takes_effect_while_the_shared_cache_is_down(client, make_token, settings, private_redis_cache):
    server, _ = private_redis_cache
    settings.CONTROLPLANE_FAULT_RELOAD_SECONDS = 0.2
    raw = make_token("monitoring:read", name="leaked")
    assert client.get(URL, HTTP_AUTHORIZATION=f"Bearer {raw}").status_code == 200
    server.kill()
    server.wait()
    assert client.get(URL, HTTP_AUTHORIZATION=f"Bearer {raw}").status_code == 200  # the last copy serves
    # Revoked by another process: the row changes, and the news (a new version in the cache) is lost.
    ApiToken.objects.filter(name="leaked").update(revoked_at=timezone.now())
    time.sleep(0.3)
    assert client.get(URL, HTTP_AUTHORIZATION=f"Bearer {raw}").status_code == 401


def test_a_revocation_made_while_the_cache_was_paused_takes_effect_when_it_answers(
    client, make_token, settings, private_redis_cache
):
    """A blip (the cache comes back with its data): the version a process last saw is no proof then."""
    import redis

    _, url = private_redis_cache
    settings.CONTROLPLANE_FAULT_RELOAD_SECONDS = 3600  # no re-read from the database during the blip
    raw = make_token("monitoring:read", name="leaked")
    assert client.get(URL, HTTP_AUTHORIZATION=f"Bearer {raw}").status_code == 200
    redis.Redis.from_url(url).client_pause(1500)
    assert client.get(URL, HTTP_AUTHORIZATION=f"Bearer {raw}").status_code == 200  # the last copy serves
    # Revoked by another process meanwhile; its new version could not be published.
    ApiToken.objects.filter(name="leaked").update(revoked_at=timezone.now())
    time.sleep(1.6)  # the cache answers again, with the old version still in it
    assert client.get(URL, HTTP_AUTHORIZATION=f"Bearer {raw}").status_code == 401
