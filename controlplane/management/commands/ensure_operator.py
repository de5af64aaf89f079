"""Make sure the operator account exists; a generated password is printed and kept in a 0600 file."""

from __future__ import annotations

import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from controlplane import operator_password
from controlplane.audit import Actor, audit_record


class Command(BaseCommand):
    help = (
        "Create the operator account named by CONTROLPLANE_ADMIN_USER (default 'admin') if it is missing. "
        "Its password is CONTROLPLANE_ADMIN_PASSWORD, or a random one, printed and kept in "
        f"VAR_DIR/{operator_password.FILE_NAME} (readable by you only) until it is changed."
    )

    def handle(self, *args: object, **options: object) -> None:
        username = settings.CONTROLPLANE_ADMIN_USER.strip()
        if not username:
            raise CommandError("CONTROLPLANE_ADMIN_USER is empty: name the operator account")
        user_model = get_user_model()
        password = settings.CONTROLPLANE_ADMIN_PASSWORD
        with transaction.atomic():
            existing = user_model.objects.filter(username=username).first()
            if existing is None:
                generated = not password
                if generated:
                    password = secrets.token_urlsafe(15)
                user = user_model.objects.create_superuser(username=username, email="", password=password)
                audit_record(
                    actor=Actor.system("manage.py ensure_operator"),
                    action="user.create",
                    obj=user,
                    after={
                        "username": username,
                        "is_superuser": True,
                        "generated_first_login": generated,
                    },
                )
        if existing is not None:
            self._exists(existing, password)
        elif generated:
            file = operator_password.write(username, password)
            self.stdout.write(self.style.SUCCESS(f"Operator account '{username}' created. Password: {password}"))
            self.stdout.write(
                f"The password is kept in {operator_password.shown(file)} (readable by you only) "
                f"until it is changed (manage.py changepassword {username})."
            )
        else:
            operator_password.remove()  # one left by an earlier installation: it does not sign in here
            self.stdout.write(f"Operator account '{username}' created with CONTROLPLANE_ADMIN_PASSWORD.")

    def _exists(self, user: object, password: str) -> None:
        """Say how to sign in; the account's password is never changed here (the operator may have)."""
        username = user.get_username()  # type: ignore[attr-defined]
        self.stdout.write(f"Operator account '{username}' exists.")
        if password and not user.check_password(password):  # type: ignore[attr-defined]
            self.stdout.write(
                self.style.WARNING(
                    f"CONTROLPLANE_ADMIN_PASSWORD was not applied: it only sets the first password of a new "
                    f"account, and '{username}' has another one. To change it: manage.py changepassword {username}"
                )
            )
        stored = operator_password.read()
        if stored is None:
            return
        file = operator_password.shown(operator_password.path())
        if stored[0] != username:
            self.stdout.write(f"{file} holds the first password of '{stored[0]}', not of '{username}'.")
        elif user.check_password(stored[1]):  # type: ignore[attr-defined]
            self.stdout.write(f"Its password is in {file} (readable by you only).")
        else:
            # The password was changed since: the file would only mislead (and it is no secret to keep).
            operator_password.remove()
            self.stdout.write(f"Removed {file}: its password was changed since.")
