"""Failed logins are limited per user and address; each lockout is an audit event."""

from __future__ import annotations

import pytest

from controlplane.models import AuditEvent

pytestmark = pytest.mark.django_db
GOOD = "correct horse battery staple"


def attempt(client, password: str, ip: str = "203.0.113.7"):
    return client.post("/accounts/login/", {"username": "operator", "password": password}, REMOTE_ADDR=ip)


def test_five_failures_lock_the_user_at_that_address(client, operator, settings):
    assert settings.AXES_FAILURE_LIMIT == 5
    for _ in range(4):
        assert attempt(client, "wrong").status_code == 200
    locked = attempt(client, "wrong")
    assert locked.status_code == 429
    assert b"Too many failed logins" in locked.content
    # Even the right password is refused while locked, and no session is made.
    assert attempt(client, GOOD).status_code == 429
    assert "_auth_user_id" not in client.session
    event = AuditEvent.objects.get(action="auth.lockout")
    assert event.after == {"username": "operator", "ip_address": "203.0.113.7"}
    assert event.actor_type == "system"


def test_another_address_is_not_locked(client, operator):
    for _ in range(5):
        attempt(client, "wrong")
    response = attempt(client, GOOD, ip="198.51.100.9")
    assert response.status_code == 302


def test_admin_login_is_limited_too(client, operator):
    for _ in range(5):
        client.post("/admin/login/", {"username": "operator", "password": "wrong"}, REMOTE_ADDR="203.0.113.8")
    response = client.post("/admin/login/", {"username": "operator", "password": GOOD}, REMOTE_ADDR="203.0.113.8")
    assert response.status_code == 429


# --- Behind a proxy: the client address is the entry the proxy appended to X-Forwarded-For ----------

PROXY = "127.0.0.1"  # the shipped nginx, as gunicorn sees it


def attempt_via_proxy(client, password: str, forwarded_for: str):
    return client.post(
        "/accounts/login/",
        {"username": "operator", "password": password},
        REMOTE_ADDR=PROXY,
        HTTP_X_FORWARDED_FOR=forwarded_for,
    )


def test_behind_one_proxy_the_forwarded_address_is_locked_not_the_proxy(client, operator, settings):
    settings.TRUSTED_PROXY_COUNT = 1
    for _ in range(4):
        assert attempt_via_proxy(client, "wrong", "203.0.113.5").status_code == 200
    assert attempt_via_proxy(client, "wrong", "203.0.113.5").status_code == 429
    assert AuditEvent.objects.get(action="auth.lockout").after == {"username": "operator", "ip_address": "203.0.113.5"}
    failed = AuditEvent.objects.filter(action="auth.login_failed").first()
    assert failed.after["ip_address"] == "203.0.113.5"
    # Another client through the same proxy still signs in.
    assert attempt_via_proxy(client, GOOD, "198.51.100.7").status_code == 302
    assert AuditEvent.objects.get(action="auth.login").after == {"ip_address": "198.51.100.7"}


@pytest.mark.parametrize(
    "spoofed",
    [
        "1.2.3.4, 203.0.113.5",
        "198.51.100.7,203.0.113.5",
        "127.0.0.1, 203.0.113.5",
        "not-an-address, 203.0.113.5",
        "198.51.100.7, 198.51.100.8, 203.0.113.5",
    ],
)
def test_behind_one_proxy_entries_the_client_wrote_do_not_change_its_address(client, operator, settings, spoofed):
    """The attacker at 203.0.113.5 sends its own X-Forwarded-For; nginx appends 203.0.113.5 after it."""
    settings.TRUSTED_PROXY_COUNT = 1
    for _ in range(5):
        attempt_via_proxy(client, "wrong", "203.0.113.5")
    assert attempt_via_proxy(client, GOOD, spoofed).status_code == 429
    assert "_auth_user_id" not in client.session


def test_without_a_trusted_proxy_the_header_is_ignored(client, operator, settings):
    assert settings.TRUSTED_PROXY_COUNT == 0  # the default
    # Each attempt claims another address; all come from one peer, so they count together.
    for n in range(5):
        client.post(
            "/accounts/login/",
            {"username": "operator", "password": "wrong"},
            REMOTE_ADDR="203.0.113.7",
            HTTP_X_FORWARDED_FOR=f"198.51.100.{n}",
        )
    response = client.post(
        "/accounts/login/",
        {"username": "operator", "password": GOOD},
        REMOTE_ADDR="203.0.113.7",
        HTTP_X_FORWARDED_FOR="198.51.100.7",
    )
    assert response.status_code == 429
    assert AuditEvent.objects.get(action="auth.lockout").after["ip_address"] == "203.0.113.7"


@pytest.mark.parametrize(
    ("count", "forwarded_for", "expected"),
    [
        (0, "198.51.100.7", "10.0.0.2"),  # no proxy trusted: the header is the client's own
        (1, "198.51.100.7", "198.51.100.7"),
        (1, " 198.51.100.7 ", "198.51.100.7"),
        (1, "1.2.3.4, 198.51.100.7", "198.51.100.7"),
        (1, "2001:db8::1", "2001:db8::1"),
        (2, "1.2.3.4, 198.51.100.7, 10.0.0.9", "198.51.100.7"),  # load balancer, then nginx
        (2, "198.51.100.7", "10.0.0.2"),  # shorter than the chain: not through it
        (1, None, "10.0.0.2"),
        (1, "", "10.0.0.2"),
        (1, "unknown", "10.0.0.2"),
        (1, "198.51.100.7:4711", "10.0.0.2"),
        (1, "1.2.3.4, 198.51.100.7\r\nX", "10.0.0.2"),
    ],
)
def test_client_ip(rf, settings, count, forwarded_for, expected):
    from controlplane.client_address import client_ip

    settings.TRUSTED_PROXY_COUNT = count
    headers = {} if forwarded_for is None else {"HTTP_X_FORWARDED_FOR": forwarded_for}
    assert client_ip(rf.get("/", REMOTE_ADDR="10.0.0.2", **headers)) == expected
