from __future__ import annotations

from django.urls import path

from deployments import views

app_name = "deployments"
urlpatterns = [
    path("", views.index, name="index"),
    path("deploy", views.deploy, name="deploy"),
    path("<int:deployment_id>/", views.detail, name="detail"),
    path("<int:deployment_id>/live", views.live, name="live"),
    path("<int:deployment_id>/cancel", views.cancel, name="cancel"),
    path("environments/<slug:name>/rollback", views.roll_back, name="rollback"),
    path("recovery/<slug:failure_type>", views.run_plan, name="recovery"),
    path("recovery/<slug:failure_type>/plan", views.plan_page, name="plan"),
]
