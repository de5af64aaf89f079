from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from controlplane import api_views

urlpatterns = [
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("api/deployment/config/production", api_views.config_production, name="api-config-production"),
    path("flags/", include("flags.urls")),
    path("deployments/", include("deployments.urls")),
    path("backups/", include("backups.urls")),
    path("", include("monitoring.urls")),
]
