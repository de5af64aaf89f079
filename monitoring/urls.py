from __future__ import annotations

from django.urls import path

from monitoring import slo_views, views

app_name = "monitoring"
urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("dashboard/panels", views.panels, name="dashboard-panels"),
    path("alerts/<int:alert_id>/acknowledge", views.acknowledge, name="alert-acknowledge"),
    path("slo/", slo_views.slo_list, name="slo-list"),
    path("slo/<slug:service>/<slug:name>/", slo_views.slo_detail, name="slo-detail"),
]
