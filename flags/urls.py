from __future__ import annotations

from django.urls import path

from flags import views

app_name = "flags"
urlpatterns = [
    path("", views.flag_list, name="list"),
    # Two segments: no flag's page (one segment) can be taken for them.
    path("usage/stale/", views.stale_list, name="stale"),
    path("usage/sdks/", views.sdk_instances, name="sdks"),
    path("<str:name>/", views.flag_detail, name="detail"),
    path("<str:name>/toggle", views.flag_toggle_view, name="toggle"),
    path("<str:name>/schedule", views.flag_schedule_view, name="schedule"),
    path("<str:name>/schedule/cancel", views.flag_schedule_cancel_view, name="schedule-cancel"),
]
