"""Log formatting: JSON lines in production, readable lines in development.

The JSON formatter is written here rather than taken from python-json-logger: every request logs a
line, and this one formats it in about 3 µs against that library's 15 µs (bench/middleware.py).
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

from controlplane.redaction import redact_text

# Attributes every LogRecord has; anything else on a record came from ``extra=`` or a filter.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "request_id"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request_id, then the record's extras."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", ""),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD:
                entry[key] = value
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        return redact_text(json.dumps(entry, default=str))


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        if not hasattr(record, "request_id"):
            record.request_id = ""
        return redact_text(super().format(record))
