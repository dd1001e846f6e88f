"""Buckets of objects on a folder tree or on S3, behind one interface (:class:`ObjectStore`).

Use :func:`open_store` to get the backend the settings select; see :mod:`.keys` for the
bucket, key and metadata rules both backends enforce identically.
"""

from facerank.storage.base import ObjectInfo, ObjectStore, StoredObject
from facerank.storage.factory import open_store
from facerank.storage.folder import FolderStore
from facerank.storage.s3 import S3Store

__all__ = [
    "FolderStore",
    "ObjectInfo",
    "ObjectStore",
    "S3Store",
    "StoredObject",
    "open_store",
]
