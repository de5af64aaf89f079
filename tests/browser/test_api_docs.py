"""The operations API's documentation page in a real browser: Swagger UI draws every operation from
the published document, with the control plane's own files only and no Content Security Policy
violation."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_the_docs_page_draws_the_operations(live_server, page: Page, operator):
    problems: list[str] = []
    page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    elsewhere: list[str] = []
    page.on(
        "request", lambda request: None if request.url.startswith(live_server.url) else elsewhere.append(request.url)
    )
    page.goto(live_server.url + "/api/deployment/docs")
    page.get_by_label("Username").fill("operator")
    page.get_by_label("Password").fill("correct horse battery staple")
    page.get_by_role("button", name="Log in").click()
    expect(page.locator('.opblock-summary-path[data-path="/api/deployment/deploy"]')).to_be_visible()
    expect(page.locator('.opblock-summary-path[data-path="/api/deployment/services/{name}"]')).to_be_visible()
    expect(page.locator(".opblock")).to_have_count(18)
    assert problems == [] and elsewhere == []
