"""Bucket, key and metadata rules shared by every backend.

Both backends validate with these functions before any I/O, so a name that works on the
folder store also works on S3 and the other way round: a pipeline developed against folders on
a laptop must not start failing when it is pointed at MinIO. The rules are the intersection of
what S3 accepts, what a POSIX file system can hold, and what keeps a key inside its bucket
folder.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping

from facerank.errors import InvalidKeyError, InvalidMetadataError

MAX_KEY_BYTES = 1024
"""S3's limit on an object key, in UTF-8 bytes."""

MAX_SEGMENT_BYTES = 255
"""``NAME_MAX`` of common file systems: the folder store turns each segment into a file name."""

RESERVED_PREFIX = ".facerank-"
"""Names the folder store uses for its own temporary files; no key segment may start with it."""

MAX_METADATA_BYTES = 2048
"""S3's limit on user metadata: UTF-8 bytes of all names plus all values."""

DEFAULT_CONTENT_TYPE = "application/octet-stream"

_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_IPV4_RE = re.compile(r"\d{1,3}(\.\d{1,3}){3}")
_BUCKET_BAD_PAIRS = ("..", ".-", "-.")
_BUCKET_BAD_AFFIXES = (("xn--", ""), ("", "-s3alias"), ("", "--ol-s3"))
_METADATA_NAME_RE = re.compile(r"[a-z0-9-]+")
_PRINTABLE_ASCII_RE = re.compile(r"[\x20-\x7e]*")

_FORBIDDEN_CATEGORIES = {
    "Cc": "a control character",
    "Cf": "an invisible format character",
    "Cs": "a lone surrogate",
    "Zl": "a line separator",
    "Zp": "a paragraph separator",
}
"""Characters that are invisible or break lines: they make names that look identical but are
not, can reorder text in logs (U+202E), and are not valid UTF-8 (surrogates)."""

_SHOWN_CHARS = 60


def shown(name: object) -> str:
    """``repr`` of a name, truncated so a 1 KB key does not flood a log line or error body."""
    text = repr(name)
    if len(text) <= _SHOWN_CHARS:
        return text
    return f"{text[:_SHOWN_CHARS]}... ({len(str(name))} characters)"


def check_bucket(bucket: str) -> str:
    """Return ``bucket`` if it follows S3's bucket naming rules, else raise InvalidKeyError.

    The folder store relies on these rules too: no bucket can be ``.meta`` or contain ``/``.
    """
    problem = _bucket_problem(bucket)
    if problem:
        raise InvalidKeyError(f"invalid bucket name {shown(bucket)}: {problem}")
    return bucket


def _bucket_problem(bucket: object) -> str | None:
    """Why ``bucket`` is not a valid S3 bucket name, or None if it is."""
    if not isinstance(bucket, str):
        return f"must be a str, not {type(bucket).__name__}"
    if not _BUCKET_RE.fullmatch(bucket):
        return (
            "must be 3-63 characters of lowercase letters, digits, '-' and '.', "
            "starting and ending with a letter or digit"
        )
    if _IPV4_RE.fullmatch(bucket):
        return "must not look like an IP address"
    if any(pair in bucket for pair in _BUCKET_BAD_PAIRS):
        return "must not contain '..', '.-' or '-.'"
    if any(bucket.startswith(head) and bucket.endswith(tail) for head, tail in _BUCKET_BAD_AFFIXES):
        return "must not start with 'xn--' or end with '-s3alias' or '--ol-s3'"
    return None


def check_key(key: str) -> str:
    """Return ``key`` if it is a valid object key, else raise InvalidKeyError.

    A valid key maps to a path strictly inside its bucket folder: ``/``-separated non-empty
    segments, none of them ``.`` or ``..``, no backslash (a separator on Windows) and no
    invisible characters. It is not all whitespace either: minio refuses such names.
    """
    _check_text(key, "key")
    if not key.strip():
        raise InvalidKeyError(f"key {shown(key)} is empty or blank")
    for segment in key.split("/"):
        _check_segment(segment, key, "key", complete=True)
    return key


def check_prefix(prefix: str) -> str:
    """Return ``prefix`` if some valid key could start with it, else raise InvalidKeyError.

    Unlike a key, a prefix may be empty or end with ``/``, and its last segment may be partial
    (``faces/zo`` matches ``faces/zoë/1.jpg``, ``a/.`` matches ``a/.hidden``).
    """
    if prefix == "":
        return prefix
    _check_text(prefix, "prefix")
    *complete, partial = prefix.split("/")
    for segment in complete:
        _check_segment(segment, prefix, "prefix", complete=True)
    _check_segment(partial, prefix, "prefix", complete=False)
    return prefix


def _check_text(name: object, what: str) -> None:
    """Rules on the whole key or prefix: type, length, and characters."""
    if not isinstance(name, str):
        raise InvalidKeyError(f"{what} must be a str, not {type(name).__name__}")
    for char in name:
        if char == "\\":
            raise InvalidKeyError(f"{what} {shown(name)} contains a backslash")
        category = unicodedata.category(char)
        if category in _FORBIDDEN_CATEGORIES:
            raise InvalidKeyError(
                f"{what} {shown(name)} contains {_FORBIDDEN_CATEGORIES[category]} "
                f"(U+{ord(char):04X})"
            )
    if len(name.encode()) > MAX_KEY_BYTES:
        raise InvalidKeyError(f"{what} {shown(name)} is longer than {MAX_KEY_BYTES} UTF-8 bytes")


def _check_segment(segment: str, name: str, what: str, *, complete: bool) -> None:
    """Rules on one ``/``-separated segment; a partial (last prefix) segment may still grow."""
    if complete and segment in ("", ".", ".."):
        raise InvalidKeyError(
            f"{what} {shown(name)} has an empty, '.' or '..' segment "
            "(leading, trailing or doubled '/', or a relative path)"
        )
    if segment.startswith(RESERVED_PREFIX):
        raise InvalidKeyError(
            f"{what} {shown(name)} has a segment starting with {RESERVED_PREFIX!r}, "
            "which is reserved for the store's temporary files"
        )
    if len(segment.encode()) > MAX_SEGMENT_BYTES:
        raise InvalidKeyError(
            f"{what} {shown(name)} has a segment longer than {MAX_SEGMENT_BYTES} UTF-8 bytes"
        )


def is_valid_key(key: str) -> bool:
    """Whether ``key`` passes :func:`check_key`; the folder store skips files that do not."""
    try:
        check_key(key)
    except InvalidKeyError:
        return False
    return True


def check_content_type(content_type: str) -> str:
    """Return ``content_type`` if it can travel as an HTTP header, else raise."""
    if not content_type:
        raise InvalidMetadataError("content type must not be empty")
    _check_header_value(content_type, "content type")
    return content_type


def check_put(
    bucket: str, key: str, content_type: str, metadata: Mapping[str, str] | None
) -> dict[str, str]:
    """Everything a put must satisfy on either backend; returns the normalised metadata."""
    check_bucket(bucket)
    check_key(key)
    check_content_type(content_type)
    return normalise_metadata(metadata)


def normalise_metadata(metadata: Mapping[str, str] | None) -> dict[str, str]:
    """User metadata with lowercased names, checked against S3's header rules.

    Names are lowercased because HTTP header names are case-insensitive and S3 returns them
    lowercased; two names differing only in case would silently collapse into one.
    """
    normalised: dict[str, str] = {}
    for name, value in (metadata or {}).items():
        key = _check_metadata_name(name)
        if key in normalised:
            raise InvalidMetadataError(f"metadata name {shown(name)} is given twice (any case)")
        _check_header_value(value, f"metadata {shown(key)}")
        normalised[key] = value
    size = sum(len(name) + len(value) for name, value in normalised.items())
    if size > MAX_METADATA_BYTES:
        raise InvalidMetadataError(
            f"metadata is {size} bytes (names plus values); S3 allows {MAX_METADATA_BYTES}"
        )
    return normalised


def _check_metadata_name(name: object) -> str:
    """Lowercase ``name`` and check it is ``[a-z0-9-]+``: safe as an ``x-amz-meta-`` header."""
    if not isinstance(name, str) or not _METADATA_NAME_RE.fullmatch(name.lower()):
        raise InvalidMetadataError(
            f"metadata name {shown(name)} must be letters, digits and '-' only"
        )
    return name.lower()


def _check_header_value(value: object, what: str) -> None:
    """Printable ASCII without surrounding spaces: HTTP trims those, S3 would not keep them."""
    if not isinstance(value, str):
        raise InvalidMetadataError(f"{what} must be a str, not {type(value).__name__}")
    if not _PRINTABLE_ASCII_RE.fullmatch(value):
        raise InvalidMetadataError(f"{what} value {shown(value)} is not printable ASCII")
    if value != value.strip(" "):
        raise InvalidMetadataError(f"{what} value {shown(value)} has leading or trailing spaces")
