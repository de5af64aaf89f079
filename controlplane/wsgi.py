from __future__ import annotations

import os
import sys

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings")

try:
    application = get_wsgi_application()
except SystemExit as exc:
    if not isinstance(exc.code, str):
        raise
    # A configuration error (one line naming the variable). Exit status 3 is what gunicorn reads as
    # "the worker cannot boot": it stops, instead of starting new workers that fail the same way.
    sys.stderr.write(f"{exc.code}\n")
    sys.stderr.flush()
    raise SystemExit(3) from None
