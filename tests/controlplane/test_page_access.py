"""Every operator page, found from the URL conf: anonymous users log in, logged-in users without staff
status or the page's view permission get the styled 403 page, and staff with it read the page."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import Permission
from django.urls import URLPattern, URLResolver, get_resolver

from controlplane.models import AuditEvent

# Not operator pages: each has its own access rule (admin's, tokens, probes, the login itself).
NOT_PAGES = ("admin/", "api/", "ofrep/", "health/", "metrics", "ping/", "static/")
NOT_PAGES += ("accounts/login/", "accounts/logout/", "favicon.ico")  # the icon is public, like static/
NOT_PAGES += ("^ping",)  # the plain-text 404 for any other path under ping/ (a regular expression)

# The view permission each part of the site needs (controlplane/access.py is what checks it).
PERMISSION_BY_PREFIX = {
    "flags/": "flags.view_flag",
    "deployments/": "deployments.view_deployment",
    "backups/": "backups.view_backup",
    "": "alerting.view_alert",  # the dashboard, its panels and its acknowledge button
}


def page_routes() -> list[str]:
    """Every route of the URL conf outside NOT_PAGES, as written (``deployments/<int:deployment_id>/``)."""

    def walk(patterns: list, prefix: str) -> list[str]:
        routes = []
        for pattern in patterns:
            route = prefix + str(pattern.pattern)
            if route.startswith(NOT_PAGES):
                continue
            if isinstance(pattern, URLResolver):
                routes += walk(pattern.url_patterns, route)
            elif isinstance(pattern, URLPattern):
                routes.append(route)
        return routes

    return walk(get_resolver().url_patterns, "")


def permission_for(route: str) -> str:
    return next(code for prefix, code in PERMISSION_BY_PREFIX.items() if route.startswith(prefix))


def path_of(route: str, rows) -> str:
    """The route with its parameters filled in from rows that exist (an unknown parameter fails the test:
    add it here with the row it names)."""
    values = {
        "flags/": {"name": rows.flag.name},
        "deployments/": {
            "deployment_id": rows.deployment.pk,
            "name": rows.environment.name,
            "failure_type": rows.plan.failure_type,
            "flag": rows.flag.name,  # a guarded rollout's section of the flag page
            "action": "pause",
        },
        "backups/": {"name": rows.target.name, "backup_id": rows.backup.pk, "plan": rows.plan.failure_type},
        "": {"alert_id": rows.alert.pk, "service": rows.slo.service.name, "name": rows.slo.name},
    }
    section = next(value for prefix, value in values.items() if route.startswith(prefix))
    return "/" + re.sub(r"<(?:\w+:)?(\w+)>", lambda match: str(section[match.group(1)]), route)


@pytest.fixture
def pages(one_of_each) -> list[tuple[str, str, str]]:
    """(route, path, view permission) of every operator page."""
    found = [(route, path_of(route, one_of_each), permission_for(route)) for route in page_routes()]
    print(f"{len(found)} operator pages: {', '.join(route or '/' for route, _, _ in found)}")  # noqa: T201
    return found


def assert_styled_403(response, where: str) -> None:
    html = response.content.decode()
    assert response.status_code == 403, (where, response.status_code)
    assert "<h1>Not allowed</h1>" in html and re.search(r'href="[^"]*controlplane\.[0-9a-f]{12}\.css"', html), where
    assert "Traceback" not in html and "Log out" in html, where


def test_the_walk_finds_every_part_of_the_site(pages):
    routes = {route for route, _, _ in pages}
    assert {"", "dashboard/panels", "flags/", "flags/<str:name>/", "deployments/<int:deployment_id>/live"} <= routes
    assert {"backups/", "backups/<slug:name>/", "alerts/<int:alert_id>/acknowledge"} <= routes
    assert {"slo/", "slo/<slug:service>/<slug:name>/"} <= routes
    assert len(pages) >= 16


def test_anonymous_users_are_sent_to_the_login_page(client, pages):
    for _, path, _ in pages:
        for method in (client.get, client.post):
            response = method(path)
            assert response.status_code == 302 and response["Location"].startswith("/accounts/login/"), path


def test_logged_in_users_who_are_not_staff_get_the_403_page_and_change_nothing(client, pages, user_with):
    # Holding every permission of the pages does not open them without staff status.
    client.force_login(user_with(*_all_permission_codes(), is_staff=False))
    events = writes()
    for _, path, _ in pages:
        assert_styled_403(client.get(path), f"GET {path}")
        assert_styled_403(client.post(path, {"environment": "test", "version": "v2"}), f"POST {path}")
    assert writes() == events


def test_staff_without_the_pages_view_permission_get_the_403_page(client, pages, user_with):
    events = writes()
    for _, path, permission in pages:
        # Every other view permission there is, but not this page's.
        codes = [code for code in _all_permission_codes() if code.split(".")[1].startswith("view_")]
        client.force_login(user_with(*(code for code in codes if code != permission)))
        assert_styled_403(client.get(path), f"GET {path}")
        assert_styled_403(client.post(path, {"environment": "test", "version": "v2"}), f"POST {path}")
    assert writes() == events


def test_staff_with_the_view_permission_read_every_page(client, pages, viewer, operator):
    for user in (viewer, operator):
        client.force_login(user)
        for _, path, _ in pages:
            response = client.get(path)
            # 405: a button's POST-only target, reached (a GET is refused for its method, not for the user).
            assert response.status_code in (200, 405), (user.username, path, response.status_code)


def writes() -> int:
    """Audit events of anything but signing in (each force_login records one)."""
    return AuditEvent.objects.exclude(action__startswith="auth.").count()


def _all_permission_codes() -> list[str]:
    codes = Permission.objects.values_list("content_type__app_label", "codename")
    return [f"{app}.{codename}" for app, codename in codes]
