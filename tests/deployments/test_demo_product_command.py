"""manage.py ensure_demo_product: registers the demo product once however often make run starts, writes
its configuration readable by its owner only (the token never printed), and is refused in production."""

from __future__ import annotations

import io
import json
import stat

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from controlplane.models import ApiToken, AuditEvent
from deployments.defaults import DEMO, DEMO_STEPS, _without_demo_product_env, ensure_defaults
from deployments.demo_product import ENDPOINT, JOB, SERVICE, TOKEN_NAME, config_file
from deployments.models import Pipeline
from monitoring.models import JobMonitor, MetricSource, MonitoredEndpoint, Service, ServiceLevelObjective

pytestmark = pytest.mark.django_db


def ensure(port: int = 18001) -> str:
    out = io.StringIO()
    call_command(
        "ensure_demo_product", "--port", str(port), "--control-plane-url", "http://127.0.0.1:18000/", stdout=out
    )
    return out.getvalue()


def rows() -> dict[str, list]:
    return {
        "services": list(Service.objects.values_list("name", flat=True)),
        "sources": list(MetricSource.objects.values_list("service__name", "kind", "urls", "interval_seconds")),
        "slos": list(
            ServiceLevelObjective.objects.values_list("name", "kind", "target_percent", "threshold_ms", "window_days")
        ),
        "jobs": list(JobMonitor.objects.values_list("name", "period_seconds", "ping_key")),
        "endpoints": list(MonitoredEndpoint.objects.values_list("name", "url")),
        "tokens": list(ApiToken.objects.usable().values_list("name", "scopes")),
    }


@pytest.fixture(autouse=True)
def _own_var_dir(settings, tmp_path):
    """The configuration is written under VAR_DIR: one per test, not shared between test processes."""
    settings.VAR_DIR = tmp_path / "var"


def test_it_registers_the_demo_once_and_writes_its_configuration():
    output = ensure()
    first = rows()
    assert first["services"] == [SERVICE]
    assert first["sources"] == [(SERVICE, "scrape", "http://127.0.0.1:18001/metrics", 15)]
    assert sorted(first["slos"]) == [
        ("availability", "availability", 99.0, None, 28),
        ("latency-2s", "latency", 95.0, 2000, 28),
    ]
    assert [(name, period) for name, period, _ in first["jobs"]] == [(JOB, 60)]
    assert first["endpoints"] == [(ENDPOINT, "http://127.0.0.1:18001/api/health")]
    assert first["tokens"] == [(TOKEN_NAME, ["flags:read"])]

    file = config_file()
    assert stat.S_IMODE(file.stat().st_mode) == 0o600
    config = json.loads(file.read_text())
    token = ApiToken.objects.get(name=TOKEN_NAME)
    assert ApiToken.hash(config["token"]) == token.token_hash
    assert config["token"] not in output and config["token"][:12] not in output
    assert config["ping_path"] == f"/ping/{first['jobs'][0][2]}" and str(first["jobs"][0][2]) not in output
    assert config["port"] == 18001 and config["control_plane_url"] == "http://127.0.0.1:18000"
    assert f"created service {SERVICE}" in output
    audited = set(AuditEvent.objects.values_list("action", flat=True))
    assert {"service.create", "metricsource.create", "jobmonitor.create", "api_token.create"} <= audited

    # make run again: nothing new, the same token kept (the running demo's file stays valid).
    events = AuditEvent.objects.count()
    output = ensure()
    assert rows() == first and json.loads(file.read_text())["token"] == config["token"]
    assert AuditEvent.objects.count() == events and "created" not in output


def test_a_lost_or_revoked_token_is_replaced_and_a_new_port_moves_the_demos_urls():
    ensure()
    old = json.loads(config_file().read_text())["token"]
    config_file().unlink()
    ensure(port=18555)
    new = json.loads(config_file().read_text())["token"]
    assert new != old
    assert [name for name, _ in rows()["tokens"]] == [TOKEN_NAME]  # the old one revoked
    assert rows()["sources"] == [(SERVICE, "scrape", "http://127.0.0.1:18555/metrics", 15)]
    assert rows()["endpoints"] == [(ENDPOINT, "http://127.0.0.1:18555/api/health")]
    assert Service.objects.count() == 1 and JobMonitor.objects.count() == 1


def test_an_operators_own_scrape_url_is_kept():
    ensure()
    MetricSource.objects.update(urls="http://demo.internal:9000/metrics")
    ensure(port=18556)
    assert rows()["sources"][0][2] == "http://demo.internal:9000/metrics"


def test_it_is_refused_in_production(settings):
    ensure()
    settings.PRODUCTION = True
    before = rows()
    with pytest.raises(CommandError, match="development only") as refused:
        ensure()
    assert refused.value.returncode == 3  # what make run tells from a failure
    assert rows() == before
    assert not config_file().exists()  # no token left for a demo to use


def test_it_is_refused_in_production_before_writing_anything(settings):
    settings.PRODUCTION = True
    with pytest.raises(CommandError):
        ensure()
    assert rows() == {"services": [], "sources": [], "slos": [], "jobs": [], "endpoints": [], "tokens": []}


def test_the_demo_pipeline_of_an_earlier_release_takes_the_steps_that_record_the_version():
    ensure_defaults()
    Pipeline.objects.filter(name=DEMO).update(steps=_without_demo_product_env(DEMO_STEPS))
    ensure_defaults()
    steps = Pipeline.objects.get(name=DEMO).steps
    backend = next(step for step in steps if step["name"] == "backend deploy")
    assert backend["env"] == {"DEMO_PRODUCT_DIR": "{var_dir}/demo-product"}
    assert backend["rollback"]["env"] == backend["env"]

    # One an operator changed is left as it is.
    changed = [*DEMO_STEPS[:1]]
    Pipeline.objects.filter(name=DEMO).update(steps=changed)
    ensure_defaults()
    assert Pipeline.objects.get(name=DEMO).steps == changed
