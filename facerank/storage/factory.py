"""Pick the object store the settings ask for, so no component hard-codes a backend."""

from __future__ import annotations

from facerank.settings import Settings
from facerank.storage.base import ObjectStore
from facerank.storage.folder import FolderStore
from facerank.storage.s3 import S3Store


def open_store(settings: Settings) -> ObjectStore:
    """The folder store under ``settings.buckets_dir``, or S3 at ``settings.s3_endpoint``.

    Opening does no I/O: a store that is down is reported by the first call that needs it.
    """
    if settings.store == "s3":
        return S3Store(
            settings.s3_endpoint,
            settings.s3_access_key,
            settings.s3_secret_key,
            settings.s3_region,
        )
    return FolderStore(settings.buckets_dir)
