"""Sessions: a sign-in lasts 12 hours by default, and a new password ends the user's other sessions
(the session keeps a hash of the password, checked on each request) while the one that changed it stays."""

from __future__ import annotations

import subprocess

import pytest
from django.conf import settings
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from tests.conftest import BASE_DIR, manage, subprocess_env

PASSWORD = "correct horse battery staple"  # tests/factories.py
NEW_PASSWORD = "a new and longer passphrase 42"


def logged_in(username: str) -> Client:
    """A browser of its own, logged in through the login form."""
    browser = Client()
    response = browser.post(reverse("login"), {"username": username, "password": PASSWORD})
    assert response.status_code == 302 and response["Location"] == "/", response.content[:500]
    return browser


def signed_in(browser: Client) -> bool:
    response = browser.get("/")
    assert response.status_code in (200, 302), response.status_code
    return response.status_code == 200


def own_password_in_admin(browser: Client, user) -> None:
    """The admin's "Change password" link."""
    response = browser.post(
        reverse("admin:password_change"),
        {"old_password": PASSWORD, "new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD},
    )
    assert response.status_code == 302, response.content[:2000]


def password_form_of_the_user_admin(browser: Client, user) -> None:
    """The user admin's password form, on one's own account."""
    response = browser.post(
        reverse("admin:auth_user_password_change", args=[user.pk]),
        {"password1": NEW_PASSWORD, "password2": NEW_PASSWORD, "usable_password": "true"},
    )
    assert response.status_code == 302, response.content[:2000]


@pytest.mark.parametrize("change", [own_password_in_admin, password_form_of_the_user_admin])
def test_a_password_changed_in_admin_ends_the_other_sessions_and_keeps_this_one(operator, change):
    here, elsewhere = logged_in("operator"), logged_in("operator")
    assert signed_in(here) and signed_in(elsewhere)
    change(here, operator)
    assert signed_in(here)
    response = elsewhere.get("/")
    assert response.status_code == 302 and response["Location"].startswith(reverse("login"))
    assert not signed_in(elsewhere)  # the session is gone, not only refused once
    assert signed_in(here)


def test_a_password_an_operator_sets_for_another_user_ends_all_of_that_users_sessions(operator, viewer):
    operator_browser = logged_in("operator")
    viewer_browsers = [logged_in("viewer"), logged_in("viewer")]
    assert all(signed_in(browser) for browser in viewer_browsers)
    password_form_of_the_user_admin(operator_browser, viewer)
    assert [signed_in(browser) for browser in viewer_browsers] == [False, False]
    assert signed_in(operator_browser)
    assert signed_in(Client()) is False  # the check itself tells a stranger from a user
    new_login = Client().post(reverse("login"), {"username": "viewer", "password": NEW_PASSWORD})
    assert new_login.status_code == 302


def test_the_changepassword_command_ends_every_session_of_the_user(operator, monkeypatch):
    browsers = [logged_in("operator"), logged_in("operator")]
    assert all(signed_in(browser) for browser in browsers)
    monkeypatch.setattr("getpass.getpass", lambda prompt="": NEW_PASSWORD)  # the command's prompt
    call_command("changepassword", "operator")
    assert [signed_in(browser) for browser in browsers] == [False, False]


def test_a_sign_in_lasts_twelve_hours_by_default(operator):
    assert settings.SESSION_COOKIE_AGE == 12 * 60 * 60
    browser = Client()
    response = browser.post(reverse("login"), {"username": "operator", "password": PASSWORD})
    cookie = response.cookies[settings.SESSION_COOKIE_NAME]
    assert cookie["max-age"] == 12 * 60 * 60
    assert browser.session.get_expiry_age() == 12 * 60 * 60


def read_setting(tmp_path, **env: str) -> subprocess.CompletedProcess[str]:
    script = "from django.conf import settings; print(settings.SESSION_COOKIE_AGE)"
    return subprocess.run(
        manage("shell", "-c", script),
        env=subprocess_env(CONTROLPLANE_VAR_DIR=str(tmp_path), **env),
        cwd=BASE_DIR,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_session_cookie_age_is_read_from_the_environment_and_checked(tmp_path):
    result = read_setting(tmp_path, SESSION_COOKIE_AGE="3600")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "3600"
    for bad in ("12h", "10"):
        result = read_setting(tmp_path, SESSION_COOKIE_AGE=bad)
        assert result.returncode != 0
        assert result.stderr.strip().splitlines() == [result.stderr.strip()]  # one line, no traceback
        assert "SESSION_COOKIE_AGE" in result.stderr
