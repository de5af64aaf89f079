from __future__ import annotations

import io
import re

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command


def run_command() -> str:
    out = io.StringIO()
    call_command("ensure_operator", stdout=out)
    return out.getvalue()


@pytest.mark.django_db
def test_first_run_creates_operator_with_random_password_printed_once(settings):
    settings.CONTROLPLANE_ADMIN_PASSWORD = ""
    first = run_command()
    password = re.search(r"Password \(shown this once\): (\S+)", first).group(1)
    assert len(password) >= 16
    user = get_user_model().objects.get(username="admin")
    assert user.check_password(password) and user.is_superuser and user.is_staff

    second = run_command()
    assert "exists" in second and password not in second
    assert get_user_model().objects.filter(username="admin").count() == 1


@pytest.mark.django_db
def test_two_installations_never_share_a_password(settings):
    settings.CONTROLPLANE_ADMIN_PASSWORD = ""
    first = re.search(r": (\S+)$", run_command().strip()).group(1)
    get_user_model().objects.all().delete()
    second = re.search(r": (\S+)$", run_command().strip()).group(1)
    assert first != second


@pytest.mark.django_db
def test_name_and_password_from_the_environment(settings):
    settings.CONTROLPLANE_ADMIN_USER = "ops"
    settings.CONTROLPLANE_ADMIN_PASSWORD = "a-long-chosen-passphrase"
    output = run_command()
    assert "a-long-chosen-passphrase" not in output
    assert get_user_model().objects.get(username="ops").check_password("a-long-chosen-passphrase")


@pytest.mark.django_db
def test_empty_user_name_is_refused(settings):
    settings.CONTROLPLANE_ADMIN_USER = " "
    with pytest.raises(CommandError, match="CONTROLPLANE_ADMIN_USER"):
        run_command()
    assert not get_user_model().objects.exists()
