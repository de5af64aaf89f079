"""The error vocabulary on HTML pages and admin screens: where a service's refusal is shown, decided once.

The JSON API maps a ``ControlPlaneError`` to its status and body; a page or an admin screen shows the
same error to the operator instead: on the form field its path starts with, or as a message.
"""

from __future__ import annotations

import re

from django import forms
from django.contrib import messages
from django.http import HttpRequest

from controlplane.errors import ControlPlaneError

# The first name of a field path: ``steps`` of ``steps[2].argv``, ``set`` of ``set.checkout.enabled``.
_HEAD = re.compile(r"[^.\[]+")


def form_field(form: forms.BaseForm, error: ControlPlaneError) -> str | None:
    """The form field an error's path starts with, or None when the form has no such field."""
    head = _HEAD.match(error.field or "")
    return head.group() if head and head.group() in form.fields else None


def add_to_form(form: forms.BaseForm, error: ControlPlaneError) -> None:
    """Put ``error`` on the form: on the field it names (with the rest of the path, if any, in front of
    the message), else on the whole form with its path, so that the operator sees what to correct."""
    name = form_field(form, error)
    if name is None:
        form.add_error(None, str(error))
    else:
        form.add_error(name, error.message if error.field == name else str(error))


def as_validation_error(error: ControlPlaneError) -> forms.ValidationError:
    """A form field's own check refused by a service rule: the whole error, path included, in the
    field's message (``steps[2].argv: required: ...``)."""
    return forms.ValidationError(str(error), code=error.code)


def report(request: HttpRequest, error: ControlPlaneError, *, about: str = "", level: int = messages.ERROR) -> None:
    """Tell the operator on the next page why nothing was done; ``about`` names the object when a screen
    acts on several (an admin action over a selection)."""
    messages.add_message(request, level, f"{about}: {error}" if about else str(error))
