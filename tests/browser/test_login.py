"""What an operator does in a real browser: log in, see the dashboard, log out."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_anonymous_visitor_is_sent_to_login(live_server, page: Page):
    page.goto(live_server.url + "/")
    expect(page).to_have_url(re.compile(r"/accounts/login/\?next=/$"))
    expect(page.get_by_role("heading", name="Log in")).to_be_visible()


def test_operator_logs_in_sees_dashboard_and_logs_out(live_server, page: Page, operator):
    page.goto(live_server.url + "/flags/")
    page.get_by_label("Username").fill("operator")
    page.get_by_label("Password").fill("correct horse battery staple")
    page.get_by_role("button", name="Log in").click()

    expect(page).to_have_url(live_server.url + "/flags/")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Dashboard").click()
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
    nav = page.get_by_role("navigation", name="Main")
    for label in ["Dashboard", "Flags", "Deployments", "Backups", "Admin"]:
        expect(nav.get_by_role("link", name=label)).to_be_visible()
    # The stylesheet really loaded from the control plane (the top bar is dark, not unstyled).
    expect(page.locator("header.topbar")).to_have_css("background-color", "rgb(20, 33, 61)")

    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_role("heading", name="Log in")).to_be_visible()
    page.goto(live_server.url + "/")
    expect(page).to_have_url(re.compile(r"/accounts/login/"))


def test_wrong_password_is_refused(live_server, page: Page, operator):
    page.goto(live_server.url + "/accounts/login/")
    page.get_by_label("Username").fill("operator")
    page.get_by_label("Password").fill("wrong")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert")).to_contain_text("didn't match")


def test_pages_satisfy_the_content_security_policy(live_server, page: Page, operator):
    violations: list[str] = []
    page.on(
        "console",
        lambda message: violations.append(message.text) if "Content Security Policy" in message.text else None,
    )
    page.goto(live_server.url + "/accounts/login/")
    page.get_by_label("Username").fill("operator")
    page.get_by_label("Password").fill("correct horse battery staple")
    page.get_by_role("button", name="Log in").click()
    for path in ["/", "/flags/", "/deployments/", "/backups/", "/admin/", "/admin/controlplane/auditevent/"]:
        page.goto(live_server.url + path)
        expect(page.locator("body")).to_be_visible()
    assert violations == []
