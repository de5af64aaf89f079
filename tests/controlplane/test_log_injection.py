"""A request path or a message argument cannot start a log line of its own, in either log format."""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import timedelta
from types import SimpleNamespace

import pytest

from controlplane.logging import JsonFormatter, TextFormatter

pytestmark = pytest.mark.django_db
TEXT_LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ \S+ \[")
# What str.splitlines (and so most log shippers and viewers) takes as the end of a line, and the rest
# of the control characters: none of them may reach a log line unescaped.
RAW_CONTROLS = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]")
FORMATTERS = {"text": TextFormatter, "json": JsonFormatter}


class Lines(logging.Handler):
    """Each record as the formatter writes it."""

    def __init__(self, formatter: logging.Formatter) -> None:
        super().__init__(logging.INFO)
        self.setFormatter(formatter)
        self.written: list[str] = []
        self.by_logger: dict[str, list[str]] = {}

    def emit(self, record: logging.LogRecord) -> None:
        self.written.append(self.format(record))
        self.by_logger.setdefault(record.name, []).append(self.written[-1])


@pytest.fixture(params=sorted(FORMATTERS))
def written(request):
    """The formatted lines every logger writes while the test runs, through the text or JSON formatter."""
    handler = Lines(FORMATTERS[request.param]())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    handler.written_format = request.param
    yield handler
    root.removeHandler(handler)
    root.setLevel(level)


def assert_one_line_each(handler: Lines) -> None:
    assert handler.written
    for entry in handler.written:
        assert not RAW_CONTROLS.search(entry), entry
        assert len(entry.splitlines()) == 1, entry
        if handler.written_format == "json":
            json.loads(entry)
        else:
            assert TEXT_LINE.match(entry), entry


FORGED = "\r\n2026-01-01 00:00:00,000 INFO controlplane.request [] FAKE"
ATTACKS = {
    "crlf": "%0d%0a2026-01-01%2000:00:00,000%20INFO%20controlplane.request%20[]%20FAKE",
    "lf": "%0aFAKE",
    "cr": "%0dFAKE",
    "tab-nul-esc-del": "%09%00%1b[2J%7fFAKE",
    "vt-ff-fs": "%0b%0c%1cFAKE",
    "nel": "%c2%85FAKE",
    "line-separator": "%e2%80%a8FAKE",
    "paragraph-separator": "%e2%80%a9FAKE",
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
@pytest.mark.parametrize("base", ["/health/live", "/api/deployment/features/bob", "/ofrep/v1/evaluate/flags/f"])
def test_a_request_path_with_line_breaks_logs_one_line(client, written, base, attack):
    client.get(base + ATTACKS[attack])
    request_lines = written.by_logger["controlplane.request"]
    assert len(request_lines) == 1
    assert "FAKE" in request_lines[0]
    assert_one_line_each(written)


def test_the_escapes_say_what_was_sent(client, written):
    client.get("/health/live%0d%0aFAKE%e2%80%a8%09")
    (line,) = written.by_logger["controlplane.request"]
    if written.written_format == "json":
        assert json.loads(line)["path"] == "/health/live\r\nFAKE\u2028\t"
    else:
        assert "/health/live\\r\\nFAKE\\u2028\\t 404" in line


def test_message_arguments_and_extras_with_line_breaks_log_one_line(written):
    log = logging.getLogger("controlplane.test")
    log.warning("user %s sent %r", "bob\nFAKE", "a\u2028b\x85c", extra={"note": "x\r\nFAKE"})
    log.info("plain\nmessage\rFAKE\x7f")
    assert_one_line_each(written)
    assert len(written.written) == 2
    if written.written_format == "text":
        assert "user bob\\nFAKE sent" in written.written[0]


def test_a_traceback_never_starts_a_line_at_the_first_column(written):
    log = logging.getLogger("controlplane.test")
    try:
        raise ValueError("bad input\n2026-01-01 00:00:00,000 INFO x [] FAKE\u2028FAKE2")
    except ValueError:
        log.exception("failed on %s", "a\nFAKE")
    (entry,) = written.written
    assert "FAKE" in entry
    if written.written_format == "json":
        assert_one_line_each(written)
        assert "ValueError: bad input\n" in json.loads(entry)["exc_info"]
    else:
        first, *rest = entry.splitlines()
        assert TEXT_LINE.match(first) and "failed on a\\nFAKE" in first
        assert rest and all(line.startswith("  ") for line in rest), rest
        assert "\u2028" not in entry and "\\u2028FAKE2" in entry
        assert "Traceback (most recent call last):" in rest[0]


def test_gunicorn_access_line_escapes_the_path(capsys):
    from gunicorn.config import Config

    from controlplane.gunicorn_logging import JsonAccessLogger

    cfg = Config()
    cfg.set("accesslog", "-")
    logger = JsonAccessLogger(cfg)
    response = SimpleNamespace(headers=[("X-Request-ID", "r1")], status="404 Not Found", status_code=404, sent=9)
    environ = {"REMOTE_ADDR": "127.0.0.1", "REQUEST_METHOD": "GET", "PATH_INFO": "/x" + FORGED + "\x7f\u2028"}
    logger.access(response, None, environ, timedelta(milliseconds=3))
    sys.stdout.flush()
    line = capsys.readouterr().out.removesuffix("\n")  # the handler's own line end
    assert len(line.splitlines()) == 1 and not RAW_CONTROLS.search(line)
    assert json.loads(line)["path"] == "/x" + FORGED + "\x7f\u2028"


def test_a_plain_record_is_written_as_the_format_says():
    record = logging.makeLogRecord({"name": "n", "levelname": "INFO", "msg": "GET %s %s", "args": ("/x", 200)})
    assert TEXT_LINE.match(TextFormatter().format(record))
    assert TextFormatter().format(record).endswith(" INFO n [] GET /x 200")
