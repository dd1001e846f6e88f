"""Identity management by moving photos: rename or merge identities, name unknown groups.

The faces bucket is the truth the gallery follows, so these operations only move photos there
and let events do the rest: a photo put under ``<NEW>/`` is enrolled as NEW by the enroll
function, a photo deleted from ``<OLD>/`` is un-enrolled. The gallery never holds a name the
faces bucket does not, so nothing of an old name survives a rename once the events are handled,
and the same code works against the folder store and MinIO, with or without facerank running
at that moment (reconcile catches up).
"""

from __future__ import annotations

import posixpath

from facerank.errors import FacerankError, InvalidIdentityError, ObjectNotFoundError
from facerank.gallery import identity_from_key, normalise_identity
from facerank.storage import ObjectStore
from facerank.unknown import UnknownFaces, UnknownGroupNotFoundError

NAMED_FOLDER = "named"
"""Sub-folder of ``<IDENTITY>/`` that photos of a named unknown group are copied into."""


class IdentityNotFoundError(FacerankError):
    code = "identity_not_found"


def photos_of(store: ObjectStore, bucket: str, identity: str) -> list[str]:
    """Keys in the faces bucket whose folder normalises to ``identity`` (NFD or NFC alike)."""
    store.ensure_bucket(bucket)
    keys = []
    for info in store.list(bucket):
        try:
            if identity_from_key(info.key) == identity:
                keys.append(info.key)
        except InvalidIdentityError:
            continue
    return keys


def move_identity(store: ObjectStore, faces_bucket: str, old: str, new: str) -> list[str]:
    """Move every photo of ``old`` under ``new`` (a rename, or a merge when ``new`` exists);
    the keys written. A photo whose new key is taken by another photo gets its content hash
    in its name rather than the old identity's, which must leave no trace."""
    source, target = normalise_identity(old), normalise_identity(new)
    if source == target:
        raise InvalidIdentityError(f"{old!r} and {new!r} are the same identity")
    photos = photos_of(store, faces_bucket, source)
    if not photos:
        raise IdentityNotFoundError(f"no photos of {source!r} in bucket {faces_bucket!r}")
    written = []
    for key in photos:
        rest = key.split("/", 1)[1]
        written.append(_copy(store, faces_bucket, key, faces_bucket, f"{target}/{rest}"))
        store.delete(faces_bucket, key)
    return written


def name_group(
    store: ObjectStore, faces_bucket: str, unknown: UnknownFaces, group: str, identity: str
) -> list[str]:
    """Copy the photos of unknown ``group`` to ``faces/<identity>/named/<key>`` (enrolled
    through events like any photo) and forget the group; the keys written."""
    name = normalise_identity(identity)
    members = unknown.groups().members().get(group)
    if not members:
        raise UnknownGroupNotFoundError(f"no unknown group {group!r} (see `facerank unknown ls`)")
    store.ensure_bucket(faces_bucket)
    written = []
    for bucket, key in dict.fromkeys((face.bucket, face.key) for face in members):
        try:
            written.append(_copy(store, bucket, key, faces_bucket, f"{name}/{NAMED_FOLDER}/{key}"))
        except ObjectNotFoundError:
            continue  # deleted meanwhile: its faces leave the group by their own event
    unknown.remove_group(group)
    return written


def _copy(store: ObjectStore, bucket: str, key: str, to_bucket: str, to_key: str) -> str:
    """Copy one photo; an existing other photo at ``to_key`` makes the name carry a hash."""
    stored = store.get(bucket, key)
    content_type = stored.info.content_type or "application/octet-stream"
    if store.exists(to_bucket, to_key):
        if store.stat(to_bucket, to_key).etag == stored.info.etag:
            return to_key
        stem, suffix = posixpath.splitext(to_key)
        to_key = f"{stem}-{stored.info.etag[:8]}{suffix}"
    store.put(to_bucket, to_key, stored.data, content_type=content_type)
    return to_key
