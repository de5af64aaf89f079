from __future__ import annotations

import pytest

from controlplane.models import AuditEvent
from monitoring.models import MonitoredEndpoint

pytestmark = pytest.mark.django_db


def test_operator_adds_an_endpoint_and_it_is_audited(operator_client):
    response = operator_client.post(
        "/admin/monitoring/monitoredendpoint/add/",
        {
            "name": "wingman-api",
            "url": "https://api.wingman.example/health",
            "expected_status": "200",
            "timeout_ms": "3000",
            "body_contains": "ok",
            "enabled": "on",
        },  # fmt: skip
    )
    assert response.status_code == 302
    assert MonitoredEndpoint.objects.get().name == "wingman-api"
    assert AuditEvent.objects.get(action="monitoredendpoint.create").after["url"].startswith("https://api.")


@pytest.mark.parametrize("url", ["ftp://files.example/x", "javascript:alert(1)", "file:///etc/passwd", "not a url"])
def test_non_http_urls_are_refused(operator_client, url):
    response = operator_client.post(
        "/admin/monitoring/monitoredendpoint/add/",
        {"name": "bad", "url": url, "expected_status": "200", "timeout_ms": "3000"},
    )
    assert response.status_code == 200 and b"errornote" in response.content
    assert not MonitoredEndpoint.objects.exists()


def test_health_metrics_are_read_only_in_admin(operator_client):
    assert operator_client.get("/admin/monitoring/healthmetric/").status_code == 200
    assert operator_client.get("/admin/monitoring/healthmetric/add/").status_code == 403
