"""What is known about the work in progress (request id, task), for logs, audit events and Sentry.

The web binds it in ``RequestContextMiddleware``; a task sent during a request carries the request id
in its message headers, and the worker binds it while the task runs.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any
from weakref import WeakKeyDictionary

from django.http import HttpRequest, HttpResponse

request_id_var: ContextVar[str] = ContextVar("request_id", default="")
task_var: ContextVar[tuple[str, str] | None] = ContextVar("task", default=None)

REQUEST_ID_HEADER = "X-Request-ID"
_VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")

request_logger = logging.getLogger("controlplane.request")


def new_request_id() -> str:
    # 128 random bits as 32 hex digits, like uuid4().hex at a quarter of its cost.
    return os.urandom(16).hex()


def accepted_request_id(incoming: str | None) -> str:
    """The caller's id when it is at most 128 of ``[A-Za-z0-9._-]``, otherwise a new one."""
    if incoming and _VALID_REQUEST_ID.fullmatch(incoming):
        return incoming
    return new_request_id()


def current_request_id() -> str:
    return request_id_var.get()


# The token each request in flight was authenticated by (controlplane.api.authenticate notes it), for its
# log line; kept beside the request rather than as an attribute set on it.
_token_labels: WeakKeyDictionary[HttpRequest, str] = WeakKeyDictionary()


_token_environments: WeakKeyDictionary[HttpRequest, str] = WeakKeyDictionary()


def note_token(request: HttpRequest, name: str, environment: str | None = None) -> None:
    """The request was authenticated by the API token ``name``: its log line names it. A flags:read
    token also names the environment whose flag states it reads (``token_environment``)."""
    _token_labels[request] = f"token:{name}"
    if environment is not None:
        _token_environments[request] = environment


def token_environment(request: HttpRequest) -> str | None:
    """The name of the environment the request's token is bound to (flags:read tokens), else None."""
    return _token_environments.get(request)


def _actor_label(request: HttpRequest) -> str:
    label = _token_labels.get(request)
    if label is not None:
        return label
    # Only a user the request already loaded: logging must not cost a session or user query.
    user = getattr(request, "_cached_user", None)
    if user is not None and user.is_authenticated:
        return user.get_username()
    return ""


# Every attribute a LogRecord of this Python has, as logging sets them for the request line with the
# settings' logThreads, logProcesses and logMultiprocessing off (thread and process None); a request
# record is this copied, plus its time and values: two dict updates instead of LogRecord's constructor
# and Logger._log, on a line written for every request.
_REQUEST_RECORD = {
    **logging.LogRecord(request_logger.name, logging.INFO, "(unknown file)", 0, "%s %s %s", (), None).__dict__,
    "thread": None,
    "threadName": None,
    "process": None,
    "processName": None,
}


def _request_record(args: tuple[Any, ...], **values: Any) -> logging.LogRecord:
    """The request line's record, as ``request_logger.info("%s %s %s", *args, extra=values)`` makes it."""
    record = logging.LogRecord.__new__(logging.LogRecord)
    fields = record.__dict__
    fields.update(_REQUEST_RECORD)
    created = time.time()
    fields["created"] = created
    fields["msecs"] = int((created - int(created)) * 1000) + 0.0
    # typeshed leaves out the module's private start time, which LogRecord itself reads.
    fields["relativeCreated"] = (created - logging._startTime) * 1000  # type: ignore[attr-defined]
    fields["args"] = args
    fields.update(values)
    return record


class RequestContextMiddleware:
    """Binds the request id, returns it in ``X-Request-ID``, and logs one line per request."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request_id = accepted_request_id(request.META.get("HTTP_X_REQUEST_ID"))
        reset = request_id_var.set(request_id)
        started = time.perf_counter()
        try:
            response = self.get_response(request)
            response[REQUEST_ID_HEADER] = request_id
            if request_logger.isEnabledFor(logging.INFO):
                method, path, status = request.method, request.path, response.status_code
                request_logger.handle(
                    _request_record(
                        (method, path, status),
                        user=_actor_label(request),
                        method=method,
                        path=path,
                        status=status,
                        duration_ms=round((time.perf_counter() - started) * 1000, 2),
                    )
                )
            return response
        finally:
            request_id_var.reset(reset)


class ContextFilter(logging.Filter):
    """Adds request_id (and, in a worker, task_name and task_id) to every log record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        task = task_var.get()
        if task is not None:
            record.task_name, record.task_id = task
        return True


# --- Celery: carry the request id from the sender to the worker ----------------------------------


def _add_request_id_header(headers: dict[str, Any] | None = None, **_: Any) -> None:
    request_id = request_id_var.get()
    if headers is not None and request_id:
        headers.setdefault("request_id", request_id)


def _bind_task(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    request = getattr(task, "request", None)
    request_id = getattr(request, "request_id", None) or (getattr(request, "headers", None) or {}).get("request_id")
    request_id_var.set(accepted_request_id(request_id) if request_id else new_request_id())
    task_var.set((getattr(task, "name", ""), task_id or ""))


def _unbind_task(**_: Any) -> None:
    request_id_var.set("")
    task_var.set(None)


def connect_celery_signals() -> None:
    from celery.signals import before_task_publish, task_postrun, task_prerun

    before_task_publish.connect(_add_request_id_header, weak=False, dispatch_uid="cp-request-id-publish")
    task_prerun.connect(_bind_task, weak=False, dispatch_uid="cp-request-id-prerun")
    task_postrun.connect(_unbind_task, weak=False, dispatch_uid="cp-request-id-postrun")
