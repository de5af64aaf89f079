"""The base layout: login for every page, navigation, static files served by the control plane."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

PAGES = ["monitoring:dashboard", "flags:list", "deployments:index", "backups:index", "admin:index"]


@pytest.mark.django_db
@pytest.mark.parametrize("name", PAGES)
def test_every_page_requires_login(client, name):
    url = reverse(name)
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login")) or response["Location"].startswith("/admin/login/")


@pytest.mark.django_db
@pytest.mark.parametrize("name", PAGES)
def test_operator_sees_every_page(operator_client, name):
    response = operator_client.get(reverse(name))
    assert response.status_code == 200


def test_dashboard_has_the_navigation(operator_client):
    html = operator_client.get("/").content.decode()
    nav = re.search(r'<nav aria-label="Main">(.*?)</nav>', html, re.S).group(1)
    labels = re.findall(r">([^<]+)</a>", nav)
    assert labels == ["Dashboard", "SLOs", "Flags", "Deployments", "Backups", "Admin"]
    assert 'aria-current="page">Dashboard' in nav


def test_navigation_only_for_staff(viewer_client, outsider):
    html = viewer_client.get("/").content.decode()
    assert ">Flags<" in html and ">Admin<" in html
    viewer_client.force_login(outsider)
    denied = viewer_client.get("/")
    html = denied.content.decode()
    assert denied.status_code == 403 and "Log out" in html
    assert ">Flags<" not in html and ">Admin<" not in html


def test_login_page_is_open_and_logs_in(client, operator):
    page = client.get(reverse("login"))
    assert page.status_code == 200 and b"csrfmiddlewaretoken" in page.content
    response = client.post(
        reverse("login"), {"username": "operator", "password": "correct horse battery staple"}, follow=True
    )
    assert response.redirect_chain[-1][0] == "/"
    assert b"<h1>Dashboard</h1>" in response.content


def test_wrong_password_stays_on_login(client, operator):
    response = client.post(reverse("login"), {"username": "operator", "password": "nope"})
    assert response.status_code == 200
    assert b"didn't match" in response.content
    assert "_auth_user_id" not in client.session


def test_logout_is_a_post_and_ends_the_session(operator_client):
    assert operator_client.get(reverse("logout")).status_code == 405
    response = operator_client.post(reverse("logout"))
    assert response.status_code == 302
    assert operator_client.get("/").status_code == 302


def test_login_requires_csrf(operator):
    from django.test import Client

    strict = Client(enforce_csrf_checks=True)
    response = strict.post(reverse("login"), {"username": "operator", "password": "correct horse battery staple"})
    assert response.status_code == 403


def test_admin_is_titled_for_the_control_plane(operator_client):
    html = operator_client.get(reverse("admin:index")).content.decode()
    assert "Control plane administration" in html


def test_pages_load_nothing_from_elsewhere_and_static_is_served(operator_client, client):
    html = operator_client.get("/").content.decode()
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert assets and not [a for a in assets if a.startswith(("http:", "https:", "//"))]
    stylesheet = next(a for a in assets if a.endswith(".css"))
    # Hashed name from the manifest storage; served by whitenoise without a login.
    assert re.search(r"controlplane\.[0-9a-f]{12}\.css$", stylesheet)
    response = client.get(stylesheet)
    assert response.status_code == 200
    assert b"--accent" in b"".join(response.streaming_content)
    assert "max-age=315360000" in response["Cache-Control"]
