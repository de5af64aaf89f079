"""A service that is one unit of work opens a durable transaction: called inside someone else's it
refuses at once, instead of committing (and sending what it queues after commit) only whenever the
caller's transaction does, or breaking it with an IntegrityError it meant to catch."""

from __future__ import annotations

import pytest
from django.db import transaction

from controlplane.audit import Actor
from controlplane.models import ApiToken, Scope
from controlplane.services import api_token_create, api_token_revoke
from flags.models import Flag
from flags.services import flag_change, flag_create, flags_import

pytestmark = pytest.mark.django_db
SYSTEM = Actor.system("test")


def test_a_durable_service_refuses_to_run_inside_another_transaction():
    flag_create(data={"name": "chat"}, actor=SYSTEM)
    token, _ = api_token_create(name="ci", scopes=[Scope.FLAGS_READ], actor=SYSTEM)
    with transaction.atomic():
        for call in (
            lambda: flag_change(name="chat", changes=None, actor=SYSTEM),
            lambda: flag_change(name="chat", changes={"enabled": True}, actor=SYSTEM),
            lambda: flags_import(document={"flags": [{"name": "chat", "enabled": True}]}, actor=SYSTEM),
            lambda: api_token_revoke(token=token, actor=SYSTEM),
        ):
            with pytest.raises(RuntimeError, match="durable"):
                call()
    assert Flag.objects.get(name="chat").enabled is False
    assert ApiToken.objects.get(pk=token.pk).revoked_at is None


def test_the_same_services_run_on_their_own():
    flag_create(data={"name": "chat"}, actor=SYSTEM)
    token, _ = api_token_create(name="ci", scopes=[Scope.FLAGS_READ], actor=SYSTEM)
    assert flag_change(name="chat", changes=None, actor=SYSTEM).flag.enabled is True
    api_token_revoke(token=token, actor=SYSTEM)
    assert ApiToken.objects.get(pk=token.pk).revoked_at is not None
