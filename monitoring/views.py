from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from monitoring.models import Heartbeat


def dashboard(request: HttpRequest) -> HttpResponse:
    """The operator's home page. The health tiles arrive with the monitoring issue."""
    heartbeat = Heartbeat.objects.filter(name="celery").first()
    return render(request, "monitoring/dashboard.html", {"heartbeat": heartbeat})
