#!/usr/bin/env python
"""Django's command-line utility for the control plane."""

from __future__ import annotations

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings")
    from django.core.management import execute_from_command_line
    from django.db.utils import InterfaceError, OperationalError

    try:
        execute_from_command_line(sys.argv)
    except (OperationalError, InterfaceError) as exc:
        # Every command (migrate, ensure_operator, import_flags, deploy, backup, ...) on a database that is
        # down or gone: one line naming DATABASE_URL (redacted) and the reason, exit 1. Any other database
        # error keeps its traceback.
        from controlplane.servers import database_unreachable

        line = database_unreachable(exc)
        if line is None:
            raise
        sys.exit(line)


if __name__ == "__main__":
    main()
