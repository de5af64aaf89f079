"""What backups tells the rest of the control plane without importing it (alerting listens)."""

from __future__ import annotations

from django.dispatch import Signal

# Sent once a failed backup or verification (sender: Backup) or restore drill (sender: Drill) has committed. Alerting
# connects to it in its apps.py and evaluates the alert rules at once instead of at the next round.
backup_failed = Signal()
