from __future__ import annotations

from django.urls import path

from monitoring import views

app_name = "monitoring"
urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("dashboard/panels", views.panels, name="dashboard-panels"),
    path("alerts/<int:alert_id>/acknowledge", views.acknowledge, name="alert-acknowledge"),
]
