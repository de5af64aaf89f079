"""Who may open the operator pages: staff members holding the page's view permission.

Every HTML view of the apps is wrapped in ``operator_page``; a write a page offers checks its own
change permission on top. Logged-in users without access get the styled 403 page (templates/403.html).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse

View = Callable[..., HttpResponse]


def operator_page(permission: str) -> Callable[[View], View]:
    """The view answers staff members who hold ``permission`` (an ``app.view_model`` code); others are
    sent to the login page (anonymous) or refused with 403.

    The change permission on the same model counts as view, as in Django's admin. Staff status as well
    as the permission: an account made for something else (a permission granted
    to a group by mistake, a service login) never reads deployment logs or backups by accident.
    """

    def decorate(view: View) -> View:
        @wraps(view)
        def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            user = request.user
            if not user.is_authenticated:
                return redirect_to_login(request.get_full_path())
            if not user.is_active or not user.is_staff:
                raise PermissionDenied("These pages are for the operations staff.")
            if not (user.has_perm(permission) or user.has_perm(permission.replace(".view_", ".change_", 1))):
                raise PermissionDenied(f"This page needs the {permission} permission.")
            return view(request, *args, **kwargs)

        return wrapped

    return decorate
