from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path, re_path

from backups import api as backups_api
from controlplane import api, api_views, openapi, pages
from deployments import api as deployments_api
from flags import api as flags_api
from flags import unleash_api
from monitoring import api as monitoring_api
from monitoring import health, ping, prometheus

# The operations API: one NinjaAPI, each app's router at its place under /api/deployment/.
operations = openapi.operations_api(
    [
        ("", monitoring_api.router),
        ("", backups_api.router),
        ("", deployments_api.router),
        ("", api_views.router),
        ("", flags_api.router),
    ]
)

# Patterns are tried in order: the ones the product's services call all the time come first (OFREP),
# and the admin's include, which raises on every path it does not hold, after the API.
urlpatterns = [
    path("ofrep/v1/evaluate/flags", flags_api.ofrep_evaluate_flags, name="ofrep-evaluate-flags"),
    path("ofrep/v1/evaluate/flags/<str:key>", flags_api.ofrep_evaluate_flag, name="ofrep-evaluate-flag"),
    # Unleash's client API (its SDKs evaluate locally) and frontend API (browsers), with Unleash's paths.
    path("api/client/features", unleash_api.client_features, name="unleash-client-features"),
    path("api/client/register", unleash_api.client_register, name="unleash-client-register"),
    path("api/client/metrics", unleash_api.client_metrics, name="unleash-client-metrics"),
    path("api/frontend", unleash_api.frontend, name="unleash-frontend"),
    path("api/frontend/client/register", unleash_api.frontend_register, name="unleash-frontend-register"),
    path("api/frontend/client/metrics", unleash_api.frontend_metrics, name="unleash-frontend-metrics"),
    # Job monitors' pings: the product's scheduled jobs report here, each with its secret URL.
    path("ping/<str:key>", ping.ping, name="job-ping"),
    path("ping/<str:key>/<str:action>", ping.ping, name="job-ping-action"),
    re_path(r"^ping(?:/.*)?$", ping.not_found),  # any other path under /ping/: plain text, not the HTML page
    path("health/live", health.live, name="health-live"),
    path("health/ready", health.ready, name="health-ready"),
    path("api/deployment/openapi.json", openapi.openapi_view(operations), name="api-openapi"),
    path("api/deployment/docs", openapi.docs_view(operations), name="api-docs"),
    path("api/deployment/", include(openapi.url_patterns(operations))),
    path("metrics", prometheus.metrics, name="metrics"),
    path("favicon.ico", pages.favicon, name="favicon"),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("flags/", include("flags.urls")),
    path("deployments/", include("deployments.urls")),
    path("backups/", include("backups.urls")),
    path("", include("monitoring.urls")),
]

# Under /api/ and /ofrep/ these answer in JSON; elsewhere they hand over to Django's pages.
handler400 = api.bad_request
handler404 = api.page_not_found
handler500 = api.server_error
