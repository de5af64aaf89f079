"""gunicorn's access log as one JSON object per line (``deploy/gunicorn.conf.py`` selects it), and its
error log with the process id it shows."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import MutableMapping
from datetime import timedelta
from typing import Any

from gunicorn.glogging import Logger

from controlplane.logging import escape_json
from controlplane.redaction import redact_text


def _with_process_id(record: logging.LogRecord) -> bool:
    """Settings turn off logging's process id (``logProcesses``; our lines never show it), which leaves
    ``record.process`` None, and gunicorn's ``[%(process)d]`` would then fail: logging prints
    "--- Logging error ---" instead of the line ("Invalid request from ip=...", "Worker exiting", an
    "Error handling request" traceback). Filled here, for gunicorn's lines only."""
    if record.process is None:
        record.process = os.getpid()
    return True


class JsonAccessLogger(Logger):
    def setup(self, cfg: Any) -> None:
        # gunicorn makes its handlers here, at start and again on each reload (SIGHUP).
        super().setup(cfg)
        for log in (self.error_log, self.access_log):
            for handler in log.handlers:
                if _with_process_id not in handler.filters:
                    handler.addFilter(_with_process_id)

    def access(self, resp: Any, req: Any, environ: MutableMapping[str, Any], request_time: timedelta) -> None:
        if not (self.cfg.accesslog or self.cfg.logconfig or self.cfg.logconfig_dict or self.cfg.syslog):
            return
        headers = dict(resp.headers) if isinstance(resp.headers, list) else {}
        line = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "level": "INFO",
            "logger": "gunicorn.access",
            "remote_addr": environ.get("REMOTE_ADDR", ""),
            "forwarded_for": environ.get("HTTP_X_FORWARDED_FOR", ""),
            "method": environ.get("REQUEST_METHOD", ""),
            "path": redact_text(environ.get("PATH_INFO", "")),
            "status": getattr(resp, "status_code", None) or str(resp.status).split(" ", 1)[0],
            "bytes": getattr(resp, "sent", None),
            "duration_ms": round(request_time.total_seconds() * 1000, 3),
            "request_id": headers.get("X-Request-ID", ""),
            "user_agent": environ.get("HTTP_USER_AGENT", "")[:300],
        }
        try:
            # json.dumps escapes every line break and control character in the path and headers but DEL.
            self.access_log.info(escape_json(json.dumps(line, separators=(",", ":"))))
        except Exception:  # noqa: BLE001 - a log line never breaks a response
            self.error("could not write the access log line")
