"""The pages fit the screen: at phone width (390 px) the header is one row with a menu and the lists
keep their buttons on screen; at 1440 px the admin's audit list does not run past the window."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from controlplane.audit import Actor, audit_record
from deployments.defaults import ensure_defaults
from deployments.services import deployment_request
from flags.services import flag_create
from tests.browser.test_dashboard import screenshot
from tests.deployments.conftest import echo, environment  # noqa: F401 - fixture used below

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
SYSTEM = Actor.system("tests")
PHONE = {"width": 390, "height": 844}


def seed(make_environment) -> None:
    for name, owner in (("new_checkout_flow_for_returning_customers", "growth-and-retention"), ("chat", "chat")):
        flag_create(data={"name": name, "enabled": True, "rollout_percent": 25, "owner": owner}, actor=SYSTEM)
    ensure_defaults()
    make_environment([echo("one", "one")], name="production-eu-west")
    deployment_request(environment="production-eu-west", version="v2024.11.30-build.1234", actor=SYSTEM)


def log_in(page: Page, url: str) -> None:
    """Log in and wait for the page asked for (at phone width Log out is inside the shut menu)."""
    page.goto(url)
    page.get_by_label("Username").fill("operator")
    page.get_by_label("Password").fill("correct horse battery staple")
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(url)


def buttons_off_screen(page: Page) -> list[str]:
    """The table buttons whose box is not wholly inside the viewport's width (and the page's own width)."""
    return page.evaluate(
        """() => [...document.querySelectorAll('table button')].filter(b => {
            const r = b.getBoundingClientRect();
            return r.width === 0 || r.left < 0 || r.right > window.innerWidth;
        }).map(b => b.getAttribute('aria-label') || b.textContent)"""
    )


def test_phone_width_one_row_header_and_buttons_on_screen(live_server, page: Page, operator, environment):  # noqa: F811
    seed(environment)
    page.set_viewport_size(PHONE)
    log_in(page, live_server.url + "/flags/")
    for path in ("/flags/", "/deployments/"):
        page.goto(live_server.url + path)
        header = page.locator("header.topbar").bounding_box()
        assert header["height"] < 70, (path, header)
        assert page.locator("table button").count() >= 2, path
        assert buttons_off_screen(page) == [], path
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), path
        screenshot(page, f"phone{path.replace('/', '-')[:-1]}")

    # The links are in the menu, shut until asked for; it opens without script and leads on.
    main_nav = page.get_by_role("navigation", name="Main")
    expect(main_nav).to_be_hidden()
    page.get_by_text("Menu").click()
    expect(main_nav).to_be_visible()
    expect(page.get_by_role("button", name="Log out")).to_be_visible()
    main_nav.get_by_role("link", name="Flags").click()
    expect(page.get_by_role("heading", name="Flags")).to_be_visible()


def test_at_desktop_width_the_links_are_inline(live_server, page: Page, operator):
    page.set_viewport_size({"width": 1280, "height": 800})
    log_in(page, live_server.url + "/flags/")
    expect(page.get_by_text("Menu")).to_be_hidden()
    expect(page.get_by_role("navigation", name="Main")).to_be_visible()
    assert page.locator("header.topbar").bounding_box()["height"] < 70


def test_the_audit_list_fits_1440_px_with_long_changes(live_server, page: Page, operator):
    flag = flag_create(data={"name": "chat", "enabled": True, "rollout_percent": 10}, actor=SYSTEM)
    keys = [f"customer-{i:05d}@example.test" for i in range(80)]
    for _ in range(3):
        audit_record(
            actor=Actor.system("a-rather-long-system-actor-name-for-testing"),
            action="flag.update",
            obj=flag,
            object_label="a-flag-label-that-goes-on-and-on-" * 3,
            before={"targeting_keys": [], "description": "x"},
            after={"targeting_keys": keys, "description": "y" * 500},
        )
    page.set_viewport_size({"width": 1440, "height": 900})
    log_in(page, live_server.url + "/admin/controlplane/auditevent/")
    expect(page.locator("#result_list")).to_be_visible()
    # Django's admin puts the list in a box that scrolls sideways: a list wider than it is cut off.
    sizes = page.evaluate(
        """() => {
            const box = document.querySelector('#changelist .results');
            return {page: document.documentElement.scrollWidth, window: window.innerWidth,
                    list: box.scrollWidth, box: box.clientWidth};
        }"""
    )
    screenshot(page, "audit-1440")
    assert sizes["page"] <= sizes["window"] and sizes["list"] <= sizes["box"], sizes
