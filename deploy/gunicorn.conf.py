"""gunicorn for the control plane in production: ``gunicorn -c deploy/gunicorn.conf.py controlplane.wsgi``.

Every value can be moved by the environment the service gets (see .env.production.example).
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

bind = f"{os.environ.get('BIND_ADDRESS', '127.0.0.1')}:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", str(2 * (os.cpu_count() or 1) + 1)))
worker_class = "sync"  # requests are short; slow I/O (backups, deployments) runs in the workers
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))  # a request stuck longer is killed and logged
graceful_timeout = 20  # on SIGTERM or a reload, requests in flight get this long to finish
keepalive = 5  # behind nginx, which keeps connections to the upstream open
max_requests = 10_000  # recycle workers now and then (memory), spread out by the jitter
max_requests_jitter = 1_000
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")  # the proxy in front
# The control plane logs every request it serves (request id, user, status, duration) and nginx logs
# every request with the client's address; gunicorn's own access line would be a third per request,
# costing more CPU than the control plane's (bench/middleware.py). GUNICORN_ACCESS_LOG=true turns it on.
accesslog = "-" if os.environ.get("GUNICORN_ACCESS_LOG", "").strip().lower() in {"1", "true", "yes", "on"} else None
logger_class = "controlplane.gunicorn_logging.JsonAccessLogger"  # stdout, one JSON object per line
errorlog = "-"

# /metrics sums every worker: prometheus-client keeps per-process files in this directory.
_var = Path(os.environ.get("CONTROLPLANE_VAR_DIR", "var")).resolve()
prometheus_dir = os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(_var / "prometheus"))


def _check_settings() -> None:
    """Settings refused (production on insecure values, a malformed URL): stop here with their one
    line, before any worker starts. Loaded in a child process so the master imports no Django."""
    environment = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": os.environ.get("DJANGO_SETTINGS_MODULE", "controlplane.settings"),
    }
    result = subprocess.run(
        [sys.executable, "-c", "from django.conf import settings; settings.INSTALLED_APPS"],
        env=environment,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        sys.exit(lines[-1] if lines else f"controlplane: settings failed to load (exit {result.returncode})")


_check_settings()  # as gunicorn reads this file, before it starts anything


def on_starting(server):  # noqa: ANN001, ANN201 - gunicorn's hook signature
    """A fresh start: counters of an earlier run would be added to this one's."""
    shutil.rmtree(prometheus_dir, ignore_errors=True)
    os.makedirs(prometheus_dir, exist_ok=True)


def child_exit(server, worker):  # noqa: ANN001, ANN201
    """A worker that stopped: its gauges leave /metrics (its counters stay, as Prometheus expects)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
