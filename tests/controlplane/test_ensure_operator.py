from __future__ import annotations

import io
import logging
import os
import re
import stat

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

from controlplane import operator_password


@pytest.fixture(autouse=True)
def var_dir(settings, tmp_path):
    """Each test its own data directory: the password file is written there."""
    settings.VAR_DIR = tmp_path
    settings.CONTROLPLANE_ADMIN_USER = "admin"
    settings.CONTROLPLANE_ADMIN_PASSWORD = ""
    return tmp_path


def run_command() -> str:
    out = io.StringIO()
    call_command("ensure_operator", stdout=out)
    return out.getvalue()


def printed_password(output: str) -> str:
    return re.search(r"Password: (\S+)", output).group(1)


@pytest.mark.django_db
def test_first_run_creates_operator_and_keeps_the_password_in_an_owner_only_file(var_dir):
    first = run_command()
    password = printed_password(first)
    assert len(password) >= 16
    user = get_user_model().objects.get(username="admin")
    assert user.check_password(password) and user.is_superuser and user.is_staff

    file = var_dir / "operator-password.txt"
    assert f"kept in {file} (readable by you only)" in first
    assert stat.S_IMODE(file.stat().st_mode) == 0o600 and file.stat().st_uid == os.getuid()
    assert file.read_text() == f"user: admin\npassword: {password}\n"
    assert not [p for p in var_dir.iterdir() if p.name != "operator-password.txt"]  # no temporary file left

    second = run_command()
    assert "exists" in second and password not in second
    assert f"Its password is in {file}" in second and file.exists()
    assert get_user_model().objects.filter(username="admin").count() == 1


@pytest.mark.django_db
def test_the_file_is_owner_only_whatever_the_umask_or_a_leftover_file(var_dir):
    leftover = var_dir / "operator-password.txt"
    leftover.write_text("from an earlier installation\n")
    leftover.chmod(0o644)
    previous = os.umask(0)
    try:
        password = printed_password(run_command())
    finally:
        os.umask(previous)
    assert stat.S_IMODE(leftover.stat().st_mode) == 0o600
    assert password in leftover.read_text()


@pytest.mark.django_db
def test_the_file_goes_once_the_password_is_changed(var_dir):
    run_command()
    user = get_user_model().objects.get(username="admin")
    user.set_password("a-new-passphrase-of-my-own")
    user.save()
    output = run_command()
    assert "Removed" in output and "its password was changed since" in output
    assert not (var_dir / "operator-password.txt").exists()
    assert "password" not in run_command().lower()  # nothing more to say next time


@pytest.mark.django_db
def test_another_accounts_file_is_left_alone(settings, var_dir):
    run_command()
    settings.CONTROLPLANE_ADMIN_USER = "ops"
    get_user_model().objects.create_user("ops", password="the-ops-passphrase")
    output = run_command()
    assert "holds the first password of 'admin', not of 'ops'" in output
    assert (var_dir / "operator-password.txt").exists()


@pytest.mark.django_db
def test_two_installations_never_share_a_password():
    first = printed_password(run_command())
    get_user_model().objects.all().delete()
    second = printed_password(run_command())
    assert first != second


@pytest.mark.django_db
def test_name_and_password_from_the_environment_write_no_file(settings, var_dir):
    (var_dir / "operator-password.txt").write_text("user: admin\npassword: from-an-earlier-database\n")
    settings.CONTROLPLANE_ADMIN_USER = "ops"
    settings.CONTROLPLANE_ADMIN_PASSWORD = "a-long-chosen-passphrase"
    output = run_command()
    assert "a-long-chosen-passphrase" not in output
    assert get_user_model().objects.get(username="ops").check_password("a-long-chosen-passphrase")
    assert not (var_dir / "operator-password.txt").exists()  # the chosen one is not written down


@pytest.mark.django_db
def test_a_password_from_the_environment_is_not_applied_to_an_existing_account(settings):
    get_user_model().objects.create_superuser("admin", password="the-operators-own-passphrase")
    settings.CONTROLPLANE_ADMIN_PASSWORD = "a-different-passphrase"
    output = run_command()
    assert "CONTROLPLANE_ADMIN_PASSWORD was not applied" in output
    assert "manage.py changepassword admin" in output
    assert "a-different-passphrase" not in output
    user = get_user_model().objects.get(username="admin")
    assert user.check_password("the-operators-own-passphrase")

    settings.CONTROLPLANE_ADMIN_PASSWORD = "the-operators-own-passphrase"
    assert "not applied" not in run_command()  # the same password: nothing to say


@pytest.mark.django_db
def test_a_ready_worker_names_the_file_never_the_password(var_dir, caplog):
    operator_password.remind()
    assert not caplog.records  # no file, no line

    password = printed_password(run_command())
    with caplog.at_level(logging.INFO, logger="controlplane.operator_password"):
        operator_password.remind()
    assert [r.getMessage() for r in caplog.records] == [
        f"Operator login: user 'admin', password in {var_dir / 'operator-password.txt'}"
    ]
    assert password not in caplog.text


@pytest.mark.django_db
def test_empty_user_name_is_refused(settings):
    settings.CONTROLPLANE_ADMIN_USER = " "
    with pytest.raises(CommandError, match="CONTROLPLANE_ADMIN_USER"):
        run_command()
    assert not get_user_model().objects.exists()
