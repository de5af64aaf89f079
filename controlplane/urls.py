from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from backups import api as backups_api
from controlplane import api, api_views, pages
from deployments import api as deployments_api
from flags import api as flags_api
from monitoring import api as monitoring_api
from monitoring import health, prometheus

# Patterns are tried in order: the ones the product's services call all the time come first (OFREP),
# and the admin's include, which raises on every path it does not hold, after the API.
urlpatterns = [
    path("ofrep/v1/evaluate/flags", flags_api.ofrep_evaluate_flags, name="ofrep-evaluate-flags"),
    path("ofrep/v1/evaluate/flags/<str:key>", flags_api.ofrep_evaluate_flag, name="ofrep-evaluate-flag"),
    path("health/live", health.live, name="health-live"),
    path("health/ready", health.ready, name="health-ready"),
    path("api/deployment/health/enhanced", health.enhanced, name="api-health-enhanced"),
    path("api/deployment/health/comprehensive", health.comprehensive, name="api-health-comprehensive"),
    path("api/deployment/performance/dashboard", monitoring_api.performance_dashboard, name="api-performance"),
    path("api/deployment/backup/status", backups_api.backup_status, name="api-backup-status"),
    path("api/deployment/backup/recovery-readiness", backups_api.recovery_readiness, name="api-backup-readiness"),
    path("api/deployment/deploy", deployments_api.deploy, name="api-deploy"),
    path("api/deployment/status", deployments_api.status, name="api-deployment-status"),
    path("api/deployment/deployments/<int:deployment_id>", deployments_api.deployment, name="api-deployment"),
    path("api/deployment/deployments/<int:deployment_id>/cancel", deployments_api.cancel, name="api-deployment-cancel"),
    path(
        "api/deployment/recovery/rollback/<slug:failure_type>",
        deployments_api.recovery_rollback,
        name="api-recovery-rollback",
    ),
    path("metrics", prometheus.metrics, name="metrics"),
    path("favicon.ico", pages.favicon, name="favicon"),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("api/deployment/config/production", api_views.config_production, name="api-config-production"),
    path("api/deployment/features", flags_api.features, name="api-features"),
    path("api/deployment/features/<str:flag>/toggle", flags_api.feature_toggle, name="api-feature-toggle"),
    path("api/deployment/features/<str:user_id>", flags_api.features_for_user, name="api-features-for-user"),
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
