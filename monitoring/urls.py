from __future__ import annotations

from django.urls import path

from controlplane import dashboard

app_name = "monitoring"
urlpatterns = [
    path("", dashboard.dashboard, name="dashboard"),
    path("dashboard/panels", dashboard.panels, name="dashboard-panels"),
    path("alerts/<int:alert_id>/acknowledge", dashboard.acknowledge, name="alert-acknowledge"),
]
