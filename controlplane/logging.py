"""Log formatting: JSON lines in production, readable lines in development."""

from __future__ import annotations

import logging

from pythonjsonlogger.json import JsonFormatter as _JsonFormatter

from controlplane.redaction import redact_text


class JsonFormatter(_JsonFormatter):
    """One JSON object per line: time, level, logger, message, request_id and the record's extras."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("rename_fields", {"asctime": "time", "levelname": "level", "name": "logger"})
        kwargs.setdefault("datefmt", "%Y-%m-%dT%H:%M:%S%z")
        super().__init__("{asctime}{levelname}{name}{message}{request_id}", *args, style="{", **kwargs)

    def format(self, record: logging.LogRecord) -> str:
        return redact_text(super().format(record))


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        if not hasattr(record, "request_id"):
            record.request_id = ""
        return redact_text(super().format(record))
