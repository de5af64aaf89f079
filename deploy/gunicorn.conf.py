"""gunicorn for the control plane in production: ``gunicorn -c deploy/gunicorn.conf.py controlplane.wsgi``.

Every value can be moved by the environment the service gets (see .env.production.example).
"""

import atexit
import gc
import os
import shutil
import subprocess
import sys
from pathlib import Path

# Under systemd the socket is controlplane-web.socket's (handed over in LISTEN_FDS) and this is unused.
bind = f"{os.environ.get('BIND_ADDRESS', '127.0.0.1')}:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", str(2 * (os.cpu_count() or 1) + 1)))
worker_class = "sync"  # requests are short; slow I/O (backups, deployments) runs in the workers
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))  # a request stuck longer is killed and logged
graceful_timeout = 20  # on SIGTERM or a reload, requests in flight get this long to finish
keepalive = 5  # behind nginx, which keeps connections to the upstream open
# Workers are recycled now and then (memory), spread out by the jitter so that they do not all go at
# once; a worker lives for some minutes under full load.
max_requests = 100_000
max_requests_jitter = 20_000
# The application loads once, in the master, before the workers fork: a recycled worker is a fork
# (milliseconds) that answers at full speed from its first request, where loading Django in the new
# worker stalled requests for 360-590 ms each time. The master opens no connection and starts no
# thread that a worker would share: Django connects on first use, the request-metrics flush thread
# and Sentry's threads start again in each process, and prometheus-client files are per process id.
# The price: a reload (SIGHUP) forks the new workers from the code already loaded, so an upgrade
# restarts the service, which refuses nothing while systemd holds the socket (DEPLOYMENT_GUIDE.md).
preload_app = True
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")  # the proxy in front
# The control plane logs every request it serves (request id, user, status, duration) and nginx logs
# every request with the client's address; gunicorn's own access line would be a third per request,
# costing more CPU than the control plane's (bench/middleware.py). GUNICORN_ACCESS_LOG=true turns it on.
accesslog = "-" if os.environ.get("GUNICORN_ACCESS_LOG", "").strip().lower() in {"1", "true", "yes", "on"} else None
logger_class = "controlplane.gunicorn_logging.JsonAccessLogger"  # stdout, one JSON object per line
errorlog = "-"

# /metrics sums every worker: prometheus-client keeps per-process files in this directory.
_var = Path(os.environ.get("CONTROLPLANE_VAR_DIR", "var")).resolve()
# gunicornc's socket, the service's own: the default (~/.gunicorn/gunicorn.ctl) is shared by every
# gunicorn of the user, and each one that starts removes the one before.
control_socket = str(_var / "gunicorn.ctl")
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


def when_ready(server):  # noqa: ANN001, ANN201
    """In the master, before the first fork: the URL patterns (every view module) load once here
    rather than in each worker's first request. Nothing here touches the database or the cache."""
    from django.urls import get_resolver

    get_resolver().reverse_dict  # noqa: B018 - loads the patterns and builds the reverse index
    # What is loaded so far is never freed: the workers' collections skip it, and leave its pages shared.
    gc.freeze()


def post_worker_init(worker):  # noqa: ANN001, ANN201
    """In each new worker, before it accepts: load the tokens' and flags' local copies (its own
    database and cache connections), so its first API request does not wait for them."""
    from controlplane.services import usable_tokens
    from flags.snapshot import snapshot

    try:
        usable_tokens.get()
        snapshot.get()
    except Exception as exc:  # noqa: BLE001 - the database is down: the first request loads them, or says why
        worker.log.warning("local copies not loaded in advance: %s", exc)


def worker_exit(server, worker):  # noqa: ANN001, ANN201
    """A worker leaving (recycled after max_requests, or stopping): the master forks its replacement
    only once it is gone, and Python's teardown of a worker's heap took a second or more, with one
    worker fewer serving meanwhile. The exit handlers run (the request-metrics flush, Sentry's, the
    log handlers'), then the process ends without the teardown. An exit on an error takes Python's
    own way out, with its status (gunicorn reads 3 as "the application cannot boot")."""
    leaving = sys.exc_info()[1]
    if not isinstance(leaving, SystemExit) or leaving.code not in (0, None):
        return
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
