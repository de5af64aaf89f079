"""An operator flips a flag on the flags page and sees it in the flag's history."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from controlplane.audit import Actor
from controlplane.models import Environment
from flags.models import Flag
from flags.services import flag_create

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_operator_flips_a_flag(live_server, page: Page, operator):
    # A transactional test may find the seeded environments flushed by an earlier one.
    Environment.objects.get_or_create(name="staging", defaults={"position": 20})
    Environment.objects.ensure("production", production=True)
    flag_create(data={"name": "buddy_chat", "enabled": True, "rollout_percent": 100}, actor=Actor.system())
    page.goto(live_server.url + "/flags/")
    page.get_by_label("Username").fill("operator")
    page.get_by_label("Password").fill("correct horse battery staple")
    page.get_by_role("button", name="Log in").click()

    row = page.locator("#flag-buddy_chat")
    expect(row).to_contain_text("enabled")
    expect(row).to_contain_text("on for everyone")
    # Outside production, one click.
    row.get_by_role("button", name="Enable buddy_chat in staging").click()
    expect(page.get_by_text("buddy_chat is now enabled in staging.")).to_be_visible()
    assert Flag.objects.get(name="buddy_chat").state("staging").enabled is True
    row.get_by_role("button", name="Disable buddy_chat in production").click()
    # In production it asks first, naming who it is on for now; nothing has changed yet.
    expect(page.get_by_role("heading", name="Turn off flag buddy_chat in production?")).to_be_visible()
    expect(page.get_by_text("buddy_chat is now on for everyone.")).to_be_visible()
    assert Flag.objects.get(name="buddy_chat").enabled is True
    page.get_by_role("button", name="Turn off buddy_chat in production").click()
    expect(page.get_by_text("buddy_chat is now disabled in production.")).to_be_visible()
    expect(page.locator("#flag-buddy_chat-production")).to_contain_text("off for everyone (disabled)")
    assert Flag.objects.get(name="buddy_chat").enabled is False

    page.get_by_role("link", name="buddy_chat").click()
    expect(page.get_by_role("heading", name="History")).to_be_visible()
    expect(page.locator("table")).to_contain_text("flag.toggle")
    expect(page.locator("table td.change").first).to_have_text("turned off")
    page.get_by_label("User id").fill("user-1")
    page.get_by_role("button", name="Evaluate").click()
    expect(page.locator("#evaluation")).to_contain_text("off (DISABLED)")
    page.get_by_label("Context").fill('{"targetingKey": "user-1"}')
    page.get_by_role("button", name="Explain").click()
    expect(page.locator("#why-production")).to_contain_text("the flag is disabled")
    expect(page.locator("#why-staging")).to_contain_text("on")
    page.get_by_label("Context").fill("[1]")
    page.get_by_role("button", name="Explain").click()
    expect(page.locator("#why-error")).to_contain_text("must be a JSON object")
