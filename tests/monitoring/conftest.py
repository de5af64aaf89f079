from __future__ import annotations

# The scheduled checks evaluate the alert rules: these tests need the default rules as alerting's do.
from tests.alerting.conftest import _default_alert_rules, alerts_on  # noqa: F401
