"""Make sure the operator account exists; print its password once, when it is first made."""

from __future__ import annotations

import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from controlplane.audit import Actor, audit_record


class Command(BaseCommand):
    help = (
        "Create the operator account named by CONTROLPLANE_ADMIN_USER (default 'admin') if it is missing. "
        "Its password is CONTROLPLANE_ADMIN_PASSWORD, or a random one printed once."
    )

    def handle(self, *args: object, **options: object) -> None:
        username = settings.CONTROLPLANE_ADMIN_USER.strip()
        if not username:
            raise CommandError("CONTROLPLANE_ADMIN_USER is empty: name the operator account")
        user_model = get_user_model()
        password = settings.CONTROLPLANE_ADMIN_PASSWORD
        with transaction.atomic():
            if user_model.objects.filter(username=username).exists():
                self.stdout.write(f"Operator account '{username}' exists.")
                return
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
        if generated:
            self.stdout.write(
                self.style.SUCCESS(f"Operator account '{username}' created. Password (shown this once): {password}")
            )
        else:
            self.stdout.write(f"Operator account '{username}' created with CONTROLPLANE_ADMIN_PASSWORD.")
