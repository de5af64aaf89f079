"""What alerting tells the rest of the control plane without importing it (deployments listens)."""

from __future__ import annotations

from django.dispatch import Signal

# Sent once an alert has started firing and that evaluation has committed (sender: Alert), with
# ``alert_id``, ``rule_name``, ``recovery_plan`` and ``recovery_auto`` (the rule's, as they were then).
# Sent once per firing: a firing alert that stays firing is not announced again. Deployments connects it in
# its apps.py and runs the rule's recovery plan when the rule says ``auto``.
alert_fired = Signal()
