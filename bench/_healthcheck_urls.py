"""bench._urls plus django-health-check 4.8's view under /ht/, with only its database and cache checks."""

from __future__ import annotations

from django.contrib.auth.decorators import login_not_required
from django.urls import path
from health_check.views import HealthCheckView

from bench._urls import urlpatterns as bench_urlpatterns

# As its docs configure 4.x (docs/migrate-to-v4.md): the view with an explicit list of checks instead of
# include("health_check.urls"). login_not_required: the control plane's LoginRequiredMiddleware would
# otherwise redirect the probe to the login page.
health_check_view = login_not_required(HealthCheckView.as_view(checks=["health_check.Database", "health_check.Cache"]))

urlpatterns = [path("ht/", health_check_view, name="health-check-peer"), *bench_urlpatterns]
