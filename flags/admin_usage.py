"""Admin screens for what the Unleash SDKs report: their instances and the hourly usage counts.

Read only: the SDKs write these rows (``flags.usage``), retention prunes them. Kept apart from
``flags/admin.py`` (the flags' own screens) and registered from ``FlagsConfig.ready``.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from flags.models import FlagUsage, SdkInstance


class _ReadOnly(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(SdkInstance)
class SdkInstanceAdmin(_ReadOnly):
    list_display = ["app_name", "instance_id", "environment", "sdk_version", "last_seen"]
    list_filter = ["environment", "app_name"]
    search_fields = ["app_name", "instance_id", "sdk_version"]
    list_select_related = ["environment"]


@admin.register(FlagUsage)
class FlagUsageAdmin(_ReadOnly):
    list_display = ["flag", "environment", "hour", "yes", "no"]
    list_filter = ["environment"]
    search_fields = ["flag"]
    list_select_related = ["environment"]
    date_hierarchy = "hour"
