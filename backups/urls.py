from __future__ import annotations

from django.urls import path

from backups import views

app_name = "backups"
urlpatterns = [
    path("", views.index, name="index"),
    path("live", views.live, name="live"),
    path("drills/<slug:plan>/run", views.drill_now, name="drill-now"),
    path("<slug:name>/", views.target_detail, name="target"),
    path("<slug:name>/backup", views.backup_now, name="backup-now"),
    path("<slug:name>/<int:backup_id>/verify", views.verify_now, name="verify-now"),
]
