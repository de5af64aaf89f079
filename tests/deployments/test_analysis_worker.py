"""End to end, once: ``manage.py deploy demo --version flaky-3 --wait`` with a real worker runs the demo pipeline
as shipped (its analysis shortened) against the demo product registered as make run registers it; the
release is caught by its analysis and rolled back by itself, the reason in the log and on the page."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from controlplane.audit import Actor
from demo_product.server import Config, DemoProduct, Flags
from deployments.defaults import DEMO, DEMO_STEPS, ensure_defaults
from deployments.demo_product import config_file, demo_product_ensure, releases_file
from deployments.models import AnalysisMeasurement, Deployment, Pipeline
from tests.conftest import free_port
from tests.deployments.analysis_product import CLOSED

pytestmark = [pytest.mark.django_db(transaction=True)]


@pytest.fixture
def demo_product(settings):
    """The demo product on a free port, registered by ensure_demo_product's function, serving from the
    releases file the demo pipeline's backend step writes (under VAR_DIR, the worker's too)."""
    import threading
    from http.server import ThreadingHTTPServer

    from backups.models import BackupTarget

    BackupTarget.objects.get_or_create(name="default", defaults={"url_env": ""})
    ensure_defaults()
    port = free_port()
    demo_product_ensure(port=port, control_plane_url=CLOSED, actor=Actor.system("tests"))
    releases_file().unlink(missing_ok=True)
    product = DemoProduct(Config.load(config_file()), flags=Flags(CLOSED, "cpt_none", timeout=0.2))
    server = ThreadingHTTPServer(("127.0.0.1", port), product.handler())
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
    stop = threading.Event()

    def traffic() -> None:  # the product's seconds of traffic, a hundred times faster
        while not stop.wait(0.01):
            product.tick()

    threading.Thread(target=traffic, daemon=True).start()
    yield product
    stop.set()
    server.shutdown()
    server.server_close()


def test_deploy_demo_flaky_is_caught_by_its_analysis_and_rolls_back_by_itself(
    demo_product, worker, settings, operator_client
):
    steps = [*DEMO_STEPS[:-1], {**DEMO_STEPS[-1], "duration": 30, "interval": 1}]
    Pipeline.objects.filter(name=DEMO).update(steps=steps)
    worker(CONTROLPLANE_VAR_DIR=str(settings.VAR_DIR))
    out = StringIO()
    with pytest.raises(CommandError) as raised:
        call_command("deploy", "demo", version="flaky-3", wait=True, timeout=120, stdout=out)
    deployment = Deployment.objects.get()
    assert str(raised.value) == f"deployment #{deployment.pk} ended rolled_back"
    text = out.getvalue()
    reason = "wingmanmatch-demo error_ratio breached 2 times in a row"
    assert "[post-deployment analysis] analysis step started" in text
    assert "[post-deployment analysis] failed after " in text and reason in text, text
    assert "[rollback: backend rollback] succeeded in " in text
    assert text.splitlines()[-1].endswith("rolled back")
    assert reason in deployment.error
    # The product serves what it served before flaky-3 again.
    assert releases_file().read_text().split() == []
    assert demo_product.health()["version"] in ("flaky-3", "v0")  # its next tick reads the file again
    demo_product.tick()
    assert demo_product.health()["version"] == "v0"
    measured = AnalysisMeasurement.objects.filter(step_run__deployment=deployment, verdict="fail")
    assert measured.filter(label="wingmanmatch-demo error_ratio").count() >= 2
    # The page draws the measurements against their thresholds, with the words a screen reader reads.
    html = operator_client.get(f"/deployments/{deployment.pk}/").content.decode()
    assert "Analysis: post-deployment analysis" in html
    assert "wingmanmatch-demo error_ratio: latest " in html and "against 0.01 (breached: " in html
    assert html.count('class="threshold"') == 3  # error ratio, p95, up
