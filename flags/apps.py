from __future__ import annotations

from django.apps import AppConfig


class FlagsConfig(AppConfig):
    name = "flags"
    verbose_name = "Feature flags"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from controlplane.state_metrics import register_state_metrics
        from flags.state_metrics import flag_gauges

        register_state_metrics(self.label, flag_gauges)

        from controlplane.retention import register_rules
        from flags.retention import RULES

        register_rules(self.label, *RULES)

        from controlplane.changes import register_change_kind
        from flags.changes import NOT_CHANGES, PREFIX, change_words

        # The charts mark flag changes, and firing alerts list them (controlplane.changes).
        register_change_kind("flag", prefix=PREFIX, exclude=NOT_CHANGES, describe=change_words)

        from waffle.models import Sample, Switch

        from flags import admin_usage  # noqa: F401 - registers the SDK instances' and usage's admin screens
        from flags.models import flush_logged

        # waffle's own models clear their cache after commit too (admin saves them); Flag overrides
        # flush itself, these two can only be wrapped.
        for model in (Switch, Sample):
            if not getattr(model.flush, "logs_faults", False):
                # A patch of waffle's classes, which mypy rightly refuses as an assignment to a method.
                setattr(model, "flush", flush_logged(model.flush))  # noqa: B010
