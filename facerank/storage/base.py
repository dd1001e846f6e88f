"""The object-store contract every backend implements.

facerank keeps photos, crops, embeddings and models in buckets. On one machine those are
folders (:class:`~facerank.storage.folder.FolderStore`); on Kubernetes they live in MinIO or any
S3 service (:class:`~facerank.storage.s3.S3Store`). Everything above this package talks to
:class:`ObjectStore` only, so the same pipeline code runs in both places.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, runtime_checkable

from facerank.errors import BucketNotFoundError, ObjectNotFoundError
from facerank.storage.keys import DEFAULT_CONTENT_TYPE, shown


@dataclass(frozen=True)
class ObjectInfo:
    """What a store knows about one object, without its data."""

    bucket: str
    key: str
    size: int
    etag: str
    """Hex MD5 of the content for single-part puts, without quotes, on every backend."""
    last_modified: datetime
    """Timezone-aware UTC."""
    content_type: str
    """As given to ``put``; empty in ``list`` results, because S3 listings do not carry it."""
    metadata: Mapping[str, str] | None
    """User metadata with lowercase names; None in ``list`` results (S3 listings lack it)."""


@dataclass(frozen=True)
class StoredObject:
    """An object's data together with the info describing exactly that data."""

    info: ObjectInfo
    data: bytes


@runtime_checkable
class ObjectStore(Protocol):
    """Buckets of objects addressed by ``/``-separated keys; each put replaces a whole object.

    Bucket names, keys and metadata are validated identically by every backend (see
    :mod:`facerank.storage.keys`) before any I/O, raising InvalidKeyError or
    InvalidMetadataError. Failures the caller may retry raise StoreUnavailableError.
    """

    def ensure_bucket(self, bucket: str) -> None:
        """Create ``bucket`` if it does not exist; calling it again is harmless."""
        ...

    def put(
        self,
        bucket: str,
        key: str,
        data: bytes,
        *,
        content_type: str = DEFAULT_CONTENT_TYPE,
        metadata: Mapping[str, str] | None = None,
        if_match: str | None = None,
        if_none_match: bool = False,
        durable: bool = True,
    ) -> ObjectInfo:
        """Store ``data`` under ``key``, replacing any previous object as a whole.

        ``durable=False`` is for data the caller can re-create (derived embeddings, index
        segments): a backend may then skip flushing it to stable storage, so a power cut may
        lose it whole, never tear it. S3 backends are always durable.

        Conditional writes, as S3's ``If-Match`` / ``If-None-Match: *``, are how read-modify-
        write cycles avoid lost updates: ``if_match`` puts only while the object's ETag is
        still that one, ``if_none_match`` only while no object exists; otherwise
        PreconditionFailedError and nothing is written.

        Raises BucketNotFoundError when the bucket is missing: callers ensure it first.
        """
        ...

    def get(self, bucket: str, key: str) -> StoredObject:
        """Data and info (with metadata) of one object; ObjectNotFoundError if absent."""
        ...

    def stat(self, bucket: str, key: str) -> ObjectInfo:
        """Info (with metadata) of one object without its data."""
        ...

    def list(self, bucket: str, prefix: str = "") -> Iterator[ObjectInfo]:
        """All objects whose key starts with ``prefix``, recursively, in UTF-8 byte order.

        Arguments are checked at the call; store errors (such as a missing bucket) surface
        while iterating. Results carry ``metadata=None`` and an empty ``content_type``.
        """
        ...

    def delete(self, bucket: str, key: str, *, if_match: str | None = None) -> None:
        """Remove one object; removing an absent key is not an error.

        With ``if_match``, as S3's conditional DeleteObject, only while the object's ETag is
        still that one (else PreconditionFailedError, an absent object included): how a
        read-modify-write cycle whose result is "nothing" avoids deleting a newer write.
        """
        ...

    def exists(self, bucket: str, key: str) -> bool:
        """Whether ``key`` holds an object; BucketNotFoundError if the bucket is missing."""
        ...

    @property
    def description(self) -> str:
        """Where the objects live, e.g. ``folder:/path`` or ``s3:http://host:9000``.

        Used as the CloudEvent ``source``, so it never contains credentials.
        """
        ...


def object_not_found(bucket: str, key: str, hint: str = "") -> ObjectNotFoundError:
    """The error every backend raises for an absent key, so messages read the same."""
    return ObjectNotFoundError(f"no object {shown(key)} in bucket {shown(bucket)}{hint}")


def bucket_not_found(bucket: str) -> BucketNotFoundError:
    """The error every backend raises for an absent bucket; callers should ensure_bucket."""
    return BucketNotFoundError(f"bucket {shown(bucket)} does not exist (call ensure_bucket first)")
