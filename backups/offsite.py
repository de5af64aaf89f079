"""The S3 storage of off-site copies: django-storages' S3 storage, uploading a local file by its path.

``S3Storage.save`` hands boto3 an open stream (``upload_fileobj``), whose parts are read one after the other
by the thread that submits them. A backup copy is always a finished local file: given its path (``local_path``), boto3's
``upload_file`` opens each part in the thread that sends it, as the peer the bench measures us against does.
Anything without a local path goes the usual way.
"""

from __future__ import annotations

import os
from typing import Any

from storages.backends.s3 import S3Storage
from storages.utils import clean_name


class OffsiteS3Storage(S3Storage):
    def _save(self, name: str, content: Any) -> str:
        path = local_path(content)
        if path is None or self.gzip:
            return str(super()._save(name, content))
        cleaned = clean_name(name)
        key = self._normalize_name(cleaned)
        params = self._get_write_parameters(key, content)
        self.bucket.Object(key).upload_file(path, ExtraArgs=params, Config=self.transfer_config)
        return str(cleaned)


def local_path(content: Any) -> str | None:
    """The path of the finished local file behind ``content`` (``local_path``, as backups.copies sets it), or None."""
    path = getattr(content, "local_path", None)
    return path if isinstance(path, str) and os.path.isfile(path) else None
