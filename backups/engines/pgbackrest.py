"""pgBackRest: backups of a PostgreSQL cluster whose WAL pgBackRest archives, and point-in-time verification.

The control plane drives the ``pgbackrest`` command (Debian's package): ``backup`` (full or differential),
``info --output=json`` for the backups and the archived WAL range, ``repo-ls`` for the time of the newest
archived WAL segment (the real recovery point), ``check`` to have the latest commit archived, and
``restore --type=time`` into a scratch data directory that a private ``postgres`` serves on a free port
while the checks run. The scratch (directory and server) always goes away, also on failure or timeout.

pgBackRest and the scratch server run as the cluster's OS user (``os_user``) when the worker runs as
root: PostgreSQL refuses to run as root, and the repository belongs to that user.
"""

from __future__ import annotations
