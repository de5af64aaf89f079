from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from flags.models import Flag


def flag_list(request: HttpRequest) -> HttpResponse:
    flags = Flag.objects.order_by("name")
    return render(request, "flags/list.html", {"flags": flags})
