from __future__ import annotations

from django.db import models


class Heartbeat(models.Model):
    """The last time a periodic ``heartbeat`` task ran: beat scheduled it and a worker ran it.

    The health checks read it as a dead-man's switch for beat and the workers.
    """

    name = models.CharField(max_length=50, unique=True)
    last_seen = models.DateTimeField()
    hostname = models.CharField(max_length=255, blank=True)

    def __str__(self) -> str:
        return f"{self.name} at {self.last_seen:%Y-%m-%d %H:%M:%S}"
