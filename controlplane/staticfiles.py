"""Static files: whitenoise's manifest storage, which answers a page even before collectstatic has run."""

from __future__ import annotations

import logging

from whitenoise.storage import CompressedManifestStaticFilesStorage

logger = logging.getLogger(__name__)


class ManifestStaticFilesStorage(CompressedManifestStaticFilesStorage):
    """Hashed, compressed, cached forever once collected, as whitenoise's; with no manifest at all
    (``manage.py migrate`` then ``runserver`` on a fresh checkout), the plain URL instead of a 500
    "Missing staticfiles manifest entry" on every page. A manifest that exists stays strict: a file
    missing from it is still an error, as it would be in production."""

    _warned = False
    hashed_files: dict[str, str]  # set by Django's manifest mixin, which whitenoise's storage extends
    manifest_hash: str

    def stored_name(self, name: str) -> str:
        if not self.hashed_files:
            # Loaded once at start by Django: collectstatic may have run since this process started.
            self.hashed_files, self.manifest_hash = self.load_manifest()
        if self.hashed_files:
            return super().stored_name(name)
        if not ManifestStaticFilesStorage._warned:
            ManifestStaticFilesStorage._warned = True
            logger.warning(
                "no static files manifest in %s: pages link unhashed files until manage.py collectstatic runs",
                self.location,
            )
        return name
