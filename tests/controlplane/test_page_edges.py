"""The edges a new operator meets first: styled 404 and 500 pages, a favicon, flash messages, the
lockout page's minutes and its way out, the one-row header menu, the audit list in words,
verify_backup naming an unknown target."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.template import loader

from controlplane.audit import Actor, audit_record
from flags.services import flag_create

pytestmark = pytest.mark.django_db
SYSTEM = Actor.system("tests")


def test_an_unknown_page_is_a_styled_404_naming_the_path(operator_client, client):
    for who in (operator_client, client):
        response = who.get("/flagz/nothing-here")
        assert response.status_code == 404
        html = response.content.decode()
        assert "<h1>Not found</h1>" in html and "<code>/flagz/nothing-here</code>" in html
        assert re.search(r'<link rel="stylesheet" href="/static/css/controlplane\.[0-9a-f]+\.css">', html)
    assert 'href="/">dashboard</a>' in operator_client.get("/nope").content.decode()


def test_a_server_error_is_a_styled_500_without_a_traceback(client, settings):
    settings.ROOT_URLCONF = "tests.controlplane.urls_faulty"
    client.raise_request_exception = False
    response = client.get("/test/boom/")
    assert response.status_code == 500
    html = response.content.decode()
    assert "<h1>Something went wrong</h1>" in html and "journalctl -u controlplane-web" in html
    assert '<link rel="stylesheet" href="/static/css/controlplane.css">' in html
    assert "boom" not in html and "Traceback" not in html


def test_the_500_page_renders_with_no_request_and_no_database(django_assert_num_queries):
    with django_assert_num_queries(0):
        html = loader.get_template("500.html").render()
    assert "Something went wrong" in html


def test_pages_link_a_favicon_and_favicon_ico_leads_to_it(client, operator_client):
    html = operator_client.get("/flags/").content.decode()
    icon = re.search(r'<link rel="icon" href="(/static/favicon\.[0-9a-f]+\.svg)" type="image/svg\+xml">', html)
    assert icon, html[:800]
    response = client.get("/favicon.ico")  # anonymous: the login page's tab asks too
    assert response.status_code == 301 and response["Location"] == icon.group(1)
    served = client.get(icon.group(1))
    assert served.status_code == 200 and served["Content-Type"] == "image/svg+xml"
    assert b"<svg" in b"".join(served.streaming_content)


def test_flash_messages_are_styled_and_announced(operator_client, settings):
    flag_create(data={"name": "chat", "enabled": False}, actor=SYSTEM)
    html = operator_client.post("/flags/chat/toggle", {"enabled": "1", "confirm": "yes"}, follow=True).content.decode()
    assert '<li class="message success" role="status">chat is now enabled in production.</li>' in html
    html = operator_client.post("/flags/nope/toggle", follow=True).content.decode()
    assert '<li class="message error" role="alert">No flag named nope.</li>' in html
    css = (settings.BASE_DIR / "static/css/controlplane.css").read_text()
    assert ".messages .success" in css and ".messages .error" in css


def test_the_header_is_one_menu_that_works_without_script(operator_client, outsider):
    html = operator_client.get("/flags/").content.decode()
    menu = re.search(r'<details class="menu">\s*<summary aria-label="Menu">Menu</summary>(.*?)</details>', html, re.S)
    assert menu, html[:1500]
    assert '<nav aria-label="Main">' in menu.group(1) and "Log out</button>" in menu.group(1)
    operator_client.force_login(outsider)
    denied = operator_client.get("/flags/").content.decode()
    assert "Log out</button>" in denied and '<nav aria-label="Main">' not in denied


def test_the_lockout_page_gives_the_minutes_and_the_command_that_unlocks(client, operator, settings):
    settings.AXES_COOLOFF_TIME = timedelta(minutes=7)
    for _ in range(settings.AXES_FAILURE_LIMIT):
        response = client.post("/accounts/login/", {"username": "operator", "password": "wrong"})
    assert response.status_code == 429
    html = response.content.decode()
    assert "paused for 7 minutes after 5 failed attempts" in html and "for a while" not in html
    assert "<code>manage.py axes_reset_username operator</code>" in html
    settings.AXES_COOLOFF_TIME = timedelta(minutes=1)
    html = client.post("/accounts/login/", {"username": "operator", "password": "wrong"}).content.decode()
    assert "paused for 1 minute after" in html


def test_the_audit_list_says_the_change_in_words_and_cuts_a_long_one(operator_client):
    flag = flag_create(data={"name": "chat", "enabled": True, "rollout_percent": 10}, actor=SYSTEM)
    audit_record(
        actor=SYSTEM, action="flag.update", obj=flag, before={"rollout_percent": 10}, after={"rollout_percent": 25}
    )
    many = [f"user-{i:04d}" for i in range(60)]
    long = audit_record(
        actor=SYSTEM, action="flag.update", obj=flag, before={"targeting_keys": []}, after={"targeting_keys": many}
    )
    html = operator_client.get("/admin/controlplane/auditevent/").content.decode()
    assert '<td class="field-change">rollout 10 % → 25 %</td>' in html
    cut = re.search(
        r'<td class="field-change"><span title="targeting keys: added user-0000, [^"]*user-0059">(.*?)</span>', html
    )
    assert cut and cut.group(1).endswith("…") and len(cut.group(1)) == 161 and "user-0059" not in cut.group(1)
    assert re.search(r'<link rel="stylesheet" href="/static/css/admin-audit\.[0-9a-f]+\.css">', html)
    detail = operator_client.get(f"/admin/controlplane/auditevent/{long.pk}/change/").content.decode()
    assert "targeting keys: added user-0000, " in detail and "user-0059</div>" in detail


def test_verify_backup_latest_names_an_unknown_target_and_lists_the_known(tmp_path):
    from backups.services import target_create

    target_create(data={"name": "shop", "url_env": "SHOP_DATABASE_URL"}, actor=SYSTEM)
    with pytest.raises(CommandError, match=r"no such target 'nosuch' \(targets: .*shop"):
        call_command("verify_backup", "--latest", "nosuch")
    with pytest.raises(CommandError, match="target 'shop' has no finished backup"):
        call_command("verify_backup", "--latest", "shop")
