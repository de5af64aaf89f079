"""Alert rules on a service's signals: what they observe, and what makes one invalid.

A service rule asks ``monitoring.selectors.service_signal`` for one signal over the rule's window, the
same way the dashboard and the API do:

- ``service_p95``: the service's p95 in seconds, above the threshold (2: "p95 over 2 s");
- ``service_error_ratio``: the share of its requests that failed, in percent, above the threshold;
- ``service_up``: the share of successful scrapes (or Prometheus' up), at or below the threshold
  (0: every scrape in the window failed; 0.5: half or more did).

No data (no request in the window, no scrape at all, a service deleted since) is None, which neither
fires an alert nor resolves a firing one (``alerting.state``): silence from a service is not health.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from alerting.models import RuleKind
from monitoring.selectors import Signal, UnknownService, service_names, service_signal

if TYPE_CHECKING:
    from alerting.models import AlertRule

logger = logging.getLogger(__name__)

SIGNALS = {
    RuleKind.SERVICE_P95: Signal.P95,
    RuleKind.SERVICE_ERROR_RATIO: Signal.ERROR_RATIO,
    RuleKind.SERVICE_UP: Signal.UP,
}


def service_value(rule: AlertRule, now: datetime) -> float | None:
    """The rule's signal of its service over its window ending at ``now``, in the rule's unit."""
    signal = SIGNALS[RuleKind(rule.kind)]
    try:
        found = service_signal(rule.service, signal, timedelta(minutes=rule.window_minutes), now)
    except UnknownService:
        logger.warning("alert rule %s names the service %s, which no longer exists", rule.name, rule.service)
        return None
    if found.value is None:
        return None
    if signal is Signal.ERROR_RATIO:
        return round(found.value * 100, 4)
    return found.value


def service_problems(rule: AlertRule) -> dict[str, str]:
    """Why a rule's service or threshold cannot be, by field (empty: none)."""
    errors: dict[str, str] = {}
    if rule.kind in SIGNALS and not rule.service:
        errors["service"] = "a service rule needs the service it watches"
    elif rule.service and rule.service not in service_names():
        errors["service"] = f"no service named {rule.service!r} (Monitoring > Services)"
    threshold = rule.threshold
    if threshold is None:  # a field the form refused
        return errors
    if rule.kind == RuleKind.SERVICE_ERROR_RATIO and not 0 <= threshold < 100:
        errors["threshold"] = "for a service's error ratio: a percent from 0 to below 100"
    elif rule.kind == RuleKind.SERVICE_UP and not 0 <= threshold < 1:
        errors["threshold"] = "for a service's up: a share from 0 (every scrape failed) to below 1"
    elif rule.kind == RuleKind.SERVICE_P95 and threshold <= 0:
        errors["threshold"] = "for a service's p95: seconds, above 0"
    return errors
