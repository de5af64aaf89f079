"""A monitored endpoint's check follows no redirect and never shows the URL's password or token."""

from __future__ import annotations

import base64

import pytest

from monitoring.checks import COMPREHENSIVE, FAIL, PASS, registered_checks, run_checks
from monitoring.models import MonitoredEndpoint
from tests.httpsink import HttpSink

pytestmark = pytest.mark.django_db
SECRET = "s3cretpw"


@pytest.fixture
def elsewhere():
    """The server a redirect points to: it must receive nothing."""
    sink = HttpSink().start()
    yield sink
    sink.stop()


@pytest.fixture
def redirector(elsewhere):
    sink = HttpSink(status=302, headers={"Location": f"http://127.0.0.1:{elsewhere.port}/next?token={SECRET}"})
    sink.start()
    yield sink
    sink.stop()


def endpoint_results() -> dict:
    return {r.component: r for r in run_checks(registered_checks(COMPREHENSIVE)) if r.component.startswith("endpoint:")}


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_is_reported_not_followed(redirector, elsewhere, status):
    redirector.status = status
    MonitoredEndpoint.objects.create(name="moved", url=f"http://127.0.0.1:{redirector.port}/health")
    (result,) = endpoint_results().values()
    assert [r.path for r in redirector.requests] == ["/health"]
    assert elsewhere.requests == []
    assert result.status == FAIL
    location = f"http://127.0.0.1:{elsewhere.port}/next?token=[redacted]"
    expected = f"http://127.0.0.1:{redirector.port}/health answered {status} (redirect to {location}), expected 200"
    assert result.output == expected
    assert SECRET not in result.output


def test_an_expected_redirect_passes_and_says_where_it_points(redirector, elsewhere):
    MonitoredEndpoint.objects.create(name="login", url=f"http://127.0.0.1:{redirector.port}/", expected_status=302)
    (result,) = endpoint_results().values()
    assert result.status == PASS
    assert result.output.startswith(f"302 (redirect to http://127.0.0.1:{elsewhere.port}/next?token=[redacted]) in ")
    assert elsewhere.requests == []


def test_credentials_in_the_url_are_sent_as_basic_auth_and_never_shown(http_sink):
    MonitoredEndpoint.objects.create(name="basic", url=f"http://user:{SECRET}@127.0.0.1:{http_sink.port}/x")
    (result,) = endpoint_results().values()
    assert result.status == PASS
    (received,) = http_sink.requests
    assert received.headers["Authorization"] == "Basic " + base64.b64encode(f"user:{SECRET}".encode()).decode()
    assert SECRET not in result.output


@pytest.mark.parametrize(
    "url",
    [
        "http://user:{secret}@127.0.0.1:{port}/",  # answers 200 where 204 is expected
        "http://user:{secret}@127.0.0.1:1/",  # refused
        "http://{secret}@127.0.0.1:{port}/",  # a token as the user name
        "http://127.0.0.1:{port}/?token={secret}",
        "http://127.0.0.1:{port}/?api_key={secret}&x=1",
        "http://127.0.0.1:1/?sig={secret}",
        "http://127.0.0.1:{port}/#access_token={secret}",
    ],
)
def test_check_outputs_never_show_the_secret(http_sink, url):
    MonitoredEndpoint.objects.create(
        name="e", url=url.format(secret=SECRET, port=http_sink.port), expected_status=204, timeout_ms=1000
    )
    (result,) = endpoint_results().values()
    assert result.status == FAIL and "127.0.0.1" in result.output
    assert SECRET not in result.output


def test_health_api_and_dashboard_never_show_the_password(http_sink, api_client, operator):
    from django.test import Client

    from monitoring.tasks import run_scheduled_checks

    MonitoredEndpoint.objects.create(
        name="private", url=f"http://user:{SECRET}@127.0.0.1:{http_sink.port}/", expected_status=204
    )
    reader = api_client("monitoring:read")
    comprehensive = reader.get("/api/deployment/health/comprehensive")
    assert "endpoint:private:responseTime" in comprehensive.json()["checks"]
    assert "user:***@127.0.0.1" in comprehensive.content.decode()  # the output is there, redacted
    for response in (comprehensive, reader.get("/api/deployment/health/enhanced")):
        assert SECRET.encode() not in response.content
    run_scheduled_checks()  # stores the outputs the dashboard shows
    page = Client()
    page.force_login(operator)
    for path in ("/", "/dashboard/panels"):
        content = page.get(path).content.decode()
        assert "endpoint:private" in content
        assert SECRET not in content
    assert "user:***@127.0.0.1" in page.get("/").content.decode()
