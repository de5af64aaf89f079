"""Pages before collectstatic has run (``manage.py migrate`` then ``runserver`` on a fresh checkout): the
plain file names, served from the source tree; after it, the manifest's hashed names as in production."""

from __future__ import annotations

import re

import pytest
from django.core.management import call_command
from django.urls import reverse


def stylesheet(html: str) -> str:
    return re.search(r'<link[^>]+href="([^"]+\.css)"', html).group(1)


@pytest.mark.django_db
def test_the_login_page_answers_before_collectstatic(client, settings, tmp_path):
    settings.STATIC_ROOT = tmp_path / "static"  # a fresh data directory: nothing collected, no manifest
    settings.STATIC_ROOT.mkdir()
    page = client.get(reverse("login"))
    assert page.status_code == 200, page.content[:2000]
    href = stylesheet(page.content.decode())
    assert href == "/static/css/controlplane.css"
    css = client.get(href)  # whitenoise serves the source file outside production
    assert css.status_code == 200 and b"--accent" in b"".join(css.streaming_content)

    # collectstatic while the process runs: the next page links the hashed name.
    call_command("collectstatic", interactive=False, verbosity=0)
    href = stylesheet(client.get(reverse("login")).content.decode())
    assert re.fullmatch(r"/static/css/controlplane\.[0-9a-f]{12}\.css", href), href


@pytest.mark.django_db
def test_a_file_missing_from_an_existing_manifest_is_still_an_error(client, settings, tmp_path):
    from django.contrib.staticfiles.storage import staticfiles_storage

    settings.STATIC_ROOT = tmp_path / "static"
    call_command("collectstatic", interactive=False, verbosity=0)
    with pytest.raises(ValueError, match="Missing staticfiles manifest entry"):
        staticfiles_storage.url("css/not-collected.css")
