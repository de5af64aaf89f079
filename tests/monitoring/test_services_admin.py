"""Admin "Services": a service with its sources and SLOs inline, how its scrapes go, every change audited."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.test import Client

from controlplane.models import AuditEvent
from monitoring.models import MetricSource, Service, ServiceLevelObjective
from tests.monitoring.exporter import Exporter

pytestmark = pytest.mark.django_db

ADD = "/admin/monitoring/service/add/"


@pytest.fixture
def exporter() -> Iterator[Exporter]:
    started = Exporter().start()
    yield started
    started.stop()


def _inline(prefix: str, rows: list[dict[str, str]], initial: int = 0) -> dict[str, str]:
    data = {
        f"{prefix}-TOTAL_FORMS": str(len(rows)),
        f"{prefix}-INITIAL_FORMS": str(initial),
        f"{prefix}-MIN_NUM_FORMS": "0",
        f"{prefix}-MAX_NUM_FORMS": "1000",
    }
    for index, row in enumerate(rows):
        data.update({f"{prefix}-{index}-{name}": value for name, value in row.items()})
    return data


SOURCE = {
    "kind": "scrape",
    "urls": "http://127.0.0.1:9/metrics\nhttp://127.0.0.1:10/metrics",
    "bearer_token_env": "BACKEND_METRICS_TOKEN",
    "interval_seconds": "15",
    "timeout_seconds": "5",
    "enabled": "on",
    "queries": "{}",
}
OBJECTIVE = {"name": "availability", "kind": "availability", "target_percent": "99.9", "window_days": "28"}


def test_operator_adds_a_service_with_a_source_and_an_slo_and_each_is_audited(operator_client: Client) -> None:
    data = {
        "name": "wingmanmatch-backend",
        "description": "The product's API",
        "enabled": "on",
        **_inline("sources", [SOURCE]),
        **_inline("objectives", [OBJECTIVE]),
    }
    response = operator_client.post(ADD, data)
    assert response.status_code == 302, response.content.decode()[:3000]
    service = Service.objects.get(name="wingmanmatch-backend")
    source = MetricSource.objects.get(service=service)
    assert source.url_list() == ["http://127.0.0.1:9/metrics", "http://127.0.0.1:10/metrics"]
    assert ServiceLevelObjective.objects.get(service=service).target_percent == 99.9
    assert AuditEvent.objects.filter(action="service.create").count() == 1
    created = AuditEvent.objects.get(action="metricsource.create")
    # The variable's name is hidden too: audit redaction goes by the key's name ("token").
    assert created.after["urls"] == SOURCE["urls"] and "bearer_token_env" in created.after
    assert "state" not in created.after and "last_error" not in created.after
    assert AuditEvent.objects.filter(action="servicelevelobjective.create").count() == 1

    change = f"/admin/monitoring/service/{service.pk}/change/"
    edit = {
        "name": service.name,
        "description": service.description,
        "enabled": "on",
        **_inline(
            "sources", [{**SOURCE, "id": str(source.pk), "service": str(service.pk), "interval_seconds": "30"}], 1
        ),
        **_inline(
            "objectives",
            [{**OBJECTIVE, "id": str(service.objectives.get().pk), "service": str(service.pk), "DELETE": "on"}],
            1,
        ),
    }
    response = operator_client.post(change, edit)
    assert response.status_code == 302, response.content.decode()[:3000]
    changed = AuditEvent.objects.get(action="metricsource.change")
    assert (changed.before["interval_seconds"], changed.after["interval_seconds"]) == (15, 30)
    deleted = AuditEvent.objects.get(action="servicelevelobjective.delete")
    assert deleted.before["name"] == "availability" and deleted.object_id
    assert not ServiceLevelObjective.objects.exists()


def test_a_bad_source_is_refused_with_its_reason(operator_client: Client) -> None:
    data = {
        "name": "backend",
        "enabled": "on",
        **_inline("sources", [{**SOURCE, "urls": "ftp://example.test/metrics"}]),
        **_inline("objectives", []),
    }
    response = operator_client.post(ADD, data)
    assert response.status_code == 200 and "Not an http(s) URL" in response.content.decode()
    assert not Service.objects.exists()


def test_the_pages_show_each_source_up_and_its_last_error_read_only(operator_client: Client) -> None:
    service = Service.objects.create(name="backend")
    MetricSource.objects.create(
        service=service,
        urls="http://127.0.0.1:9/metrics",
        up=False,
        last_error="The scrape of x refused the connection.",
    )
    listing = operator_client.get("/admin/monitoring/service/").content.decode()
    assert 'data-status="down"' in listing and "refused the connection" in listing
    page = operator_client.get(f"/admin/monitoring/service/{service.pk}/change/").content.decode()
    assert "The scrape of x refused the connection." in page
    assert 'name="sources-0-last_error"' not in page and 'name="sources-0-up"' not in page


def test_scrape_now_needs_the_change_permission_and_scrapes(
    client: Client, viewer, operator, exporter: Exporter
) -> None:
    service = Service.objects.create(name="backend")
    source = MetricSource.objects.create(service=service, urls=exporter.url, timeout_seconds=2)
    action = {"action": "scrape_now", "_selected_action": [service.pk]}
    client.force_login(viewer)
    client.post("/admin/monitoring/service/", action)
    assert exporter.headers == []
    client.force_login(operator)
    client.post("/admin/monitoring/service/", action)
    source.refresh_from_db()
    assert len(exporter.headers) == 1 and source.up is True
