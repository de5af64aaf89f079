from __future__ import annotations

from django.urls import path

from flags import views

app_name = "flags"
urlpatterns = [
    path("", views.flag_list, name="list"),
]
