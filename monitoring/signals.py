"""What monitoring tells the rest of the control plane without importing it (alerting listens)."""

from __future__ import annotations

from django.dispatch import Signal

# Sent by the scheduled checks once their rows are stored (sender: scheduled_checks_run; ``rows``: the
# HealthMetric rows). Alerting connects to it in its apps.py and evaluates the rules right away, in the
# same task: a separate schedule would read a minute twice or not at all.
checks_recorded = Signal()
