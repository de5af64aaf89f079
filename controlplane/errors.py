"""The one error vocabulary every app raises, and the API layer maps once to the JSON error shape.

A service says what went wrong in these terms; it never builds an HTTP answer. The API layer
(``controlplane.api``) turns each into ``{"error": code, "detail": ..., "field": ...}`` with its status:

- ``InvalidInput``: the input breaks a rule; ``field`` is its path (``steps[2].argv``). 422.
- ``NotFound``: no such object. 404.
- ``Conflict``: the object's state does not allow it now (a lock held, not cancellable). 409.
- ``Forbidden``: the caller may not do this. 403.

Each app names its own cases as subclasses (``InvalidFlagDefinition(InvalidInput)``), so that callers
that catch the app's name keep working and the API maps them all the same way.
"""

from __future__ import annotations

from typing import Any, ClassVar


class ControlPlaneError(Exception):
    """The base of the vocabulary: an HTTP status, a machine-readable code and a sentence."""

    status: ClassVar[int] = 400
    code: ClassVar[str] = "bad_request"

    def __init__(self, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        # More members of the JSON answer (``active`` for a lock), given by the case that knows them.
        self.extra = extra

    @property
    def field(self) -> str | None:
        return None


class InvalidInput(ControlPlaneError, ValueError):
    """The input breaks a rule; ``field`` is the path to the part that does (``strategies[0].rollout``)."""

    status = 422
    code = "invalid"

    def __init__(self, field: str, message: str, **extra: Any) -> None:
        super().__init__(message, **extra)
        self._field = field

    @property
    def field(self) -> str:
        return self._field

    def __str__(self) -> str:
        return f"{self._field}: {self.message}"


class NotFound(ControlPlaneError, LookupError):
    status = 404
    code = "not_found"


class Conflict(ControlPlaneError, RuntimeError):
    """The request is well formed, but the object's present state refuses it (409)."""

    status = 409
    code = "conflict"


class Forbidden(ControlPlaneError, PermissionError):
    status = 403
    code = "forbidden"
