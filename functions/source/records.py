"""S3 event notification records, the format MinIO and Amazon S3 share, parsed into changes.

MinIO's webhook and Amazon S3 (through SNS) both describe a change as an S3 ``Records`` entry:
``eventName``, ``s3.bucket.name`` and ``s3.object`` with a URL-escaped ``key``, ``eTag``,
``size`` and ``sequencer``. They differ only in the envelope around the records and in whether
the event name carries the ``s3:`` prefix, so one parser serves both (:mod:`.minio` and
:mod:`.aws` unwrap the envelopes).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import unquote_plus

from facerank.errors import FacerankError
from functions.source.emitter import Change

log = logging.getLogger(__name__)

T = TypeVar("T")

CREATED_KINDS = frozenset({"Put", "Post", "Copy", "CompleteMultipartUpload"})
"""``ObjectCreated:*`` names that write new content. MinIO also files PutRetention,
PutLegalHold, PutTagging and DeleteTagging under ObjectCreated; they change no pixel."""

REMOVED = "ObjectRemoved:"
"""Every removal (Delete, DeleteMarkerCreated, MinIO's DeleteAllVersions and NoOP) means the
key has no current version any more, or never had one: all read as "deleted"."""


class PayloadError(FacerankError):
    """A notification body is not in the documented format; the message says what is wrong."""

    code = "invalid_payload"


@dataclass
class Batch:
    """The changes a notification describes, and how many of its records were of no concern."""

    changes: list[Change] = field(default_factory=list)
    ignored: int = 0


def parse_records(records: object) -> Batch:
    """Parse an S3 ``Records`` list; event kinds that do not touch photos are counted only.

    Raises :class:`PayloadError` for anything not shaped like S3 records, before a single
    change is returned, so a malformed batch is refused whole rather than half-emitted.
    """
    if not isinstance(records, list):
        raise PayloadError("'Records' must be a list")
    batch = Batch()
    for index, record in enumerate(records):
        change = _parse_record(_mapping(record, f"Records[{index}]"), f"Records[{index}]")
        if change is None:
            batch.ignored += 1
        else:
            batch.changes.append(change)
    return batch


def _parse_record(record: Mapping[str, Any], where: str) -> Change | None:
    name = _field(record, "eventName", str, where)
    s3 = _mapping(record.get("s3"), f"{where}.s3")
    bucket = _field(
        _mapping(s3.get("bucket"), f"{where}.s3.bucket"), "name", str, f"{where}.s3.bucket"
    )
    where = f"{where}.s3.object"
    obj = _mapping(s3.get("object"), where)
    key = _decode_key(_field(obj, "key", str, where))
    sequencer = _optional(obj, "sequencer", str, where) or ""
    kind = name.removeprefix("s3:")
    if kind.startswith(REMOVED):
        return Change.deleted(bucket, key, sequencer)
    family, _, variant = kind.partition(":")
    if family == "ObjectCreated" and variant in CREATED_KINDS:
        etag = _optional(obj, "eTag", str, where) or ""
        size = _optional(obj, "size", int, where)
        if size is not None and size < 0:
            raise PayloadError(f"{where}.size must not be negative")
        return Change.created(bucket, key, etag.strip('"'), size, sequencer)
    log.debug("ignoring a %r record", name[:80])
    return None


def _decode_key(escaped: str) -> str:
    """The key as stored: both servers escape it like Go's ``url.QueryEscape`` (space is '+').

    Bytes that are not UTF-8 become lone surrogates rather than U+FFFD, so the emitter's key
    check refuses them instead of forwarding a key that names some other object.
    """
    return unquote_plus(escaped, errors="surrogateescape")


def load_json(body: bytes, what: str) -> Mapping[str, Any]:
    """Parse a request body that must hold one JSON object."""
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PayloadError(f"{what} is not valid JSON: {exc}") from None
    except RecursionError:
        raise PayloadError(f"{what} is nested too deeply") from None
    return _mapping(document, what)


def _mapping(value: object, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise PayloadError(f"{where} must be a JSON object")
    return value


def _field(record: Mapping[str, Any], name: str, type_: type[T], where: str) -> T:
    value = record.get(name)
    if not isinstance(value, type_) or isinstance(value, bool):
        raise PayloadError(f"{where}.{name} must be a JSON {_JSON_NAMES[type_]}")
    return value


def _optional(record: Mapping[str, Any], name: str, type_: type[T], where: str) -> T | None:
    """A field the server may omit (MinIO sends no ``eTag`` or ``size`` for removals)."""
    if record.get(name) is None:
        return None
    return _field(record, name, type_, where)


_JSON_NAMES: dict[type, str] = {str: "string", int: "integer"}
