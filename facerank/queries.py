"""The queries bucket: photos to identify, and the result the identify function writes beside each.

Layout in the queries bucket (``FACERANK_QUERIES_BUCKET``)::

    <key>                    a photo someone dropped (any key outside ``results/``)
    results/<key>.json       what identifying that photo found, for the photo version ``etag``

Why beside the photo, in the same bucket: whoever can drop a photo can read its answer with
the same credentials and the same client, and a result names the photo's ETag, so a result
always says which version of the photo it describes. A result is written by a conditional put
(absent, or still the result of an older version), so a redelivered event finds its result
there and changes nothing, and two deliveries racing cannot both write.

A photo that cannot be identified (not an image, no face) gets a result too, with ``error``:
the person who dropped it learns why, and reconcile passes do not send it again.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from facerank.errors import BucketNotFoundError, ObjectNotFoundError, PreconditionFailedError
from facerank.storage import ObjectStore

log = logging.getLogger(__name__)

RESULTS_PREFIX = "results/"
RESULT_SUFFIX = ".json"
FORMAT = "facerank.query.result/v1"
COMMIT_ATTEMPTS = 3
"""Read-check-put rounds before leaving the key to the delivery that keeps winning it."""


def result_key(key: str) -> str:
    """Where the result of the photo at ``key`` lives."""
    return f"{RESULTS_PREFIX}{key}{RESULT_SUFFIX}"


def is_result_key(key: str) -> bool:
    """Whether ``key`` is a result (identify's own write), never a photo to identify."""
    return key.startswith(RESULTS_PREFIX)


def photo_key(result: str) -> str | None:
    """The photo a result key belongs to; None for a key that is no result."""
    if not (is_result_key(result) and result.endswith(RESULT_SUFFIX)):
        return None
    return result[len(RESULTS_PREFIX) : -len(RESULT_SUFFIX)] or None


@dataclass(frozen=True)
class IdentifiedFace:
    """One face of a query photo: where it is, its top-k identities, and the verdict."""

    box: tuple[int, int, int, int]
    confidence: float
    matches: tuple[Mapping[str, Any], ...]
    """As the predictor ranked them: ``identity``, ``face_id``, ``distance``, ``similarity``,
    ``match``; best first."""
    unknown_id: str | None = None
    """The unknown face this face was kept as, when it matched nobody (see ``unknown``)."""

    @property
    def identity(self) -> str | None:
        """The identity this face is, or None when no identity matched."""
        if self.matches and self.matches[0].get("match"):
            return str(self.matches[0]["identity"])
        return None

    @property
    def distance(self) -> float | None:
        return float(self.matches[0]["distance"]) if self.matches else None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "box": list(self.box),
            "confidence": self.confidence,
            "identity": self.identity,
            "distance": self.distance,
            "match": self.identity is not None,
            "matches": [dict(m) for m in self.matches],
        }
        if self.unknown_id is not None:
            data["unknown_id"] = self.unknown_id
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> IdentifiedFace:
        box = tuple(int(v) for v in data["box"])
        if len(box) != 4:
            raise ValueError("a face box has four numbers")
        return cls(
            box=(box[0], box[1], box[2], box[3]),
            confidence=float(data["confidence"]),
            matches=tuple(dict(m) for m in data.get("matches", ())),
            unknown_id=data.get("unknown_id"),
        )


@dataclass(frozen=True)
class QueryResult:
    """The result of one version of one query photo; ``error`` set when it was refused."""

    bucket: str
    key: str
    etag: str
    model_version: str = ""
    faces: tuple[IdentifiedFace, ...] = ()
    error: Mapping[str, str] | None = None
    """``{"code", "message"}`` of the refusal (the codes of enrollment's refusals)."""

    @property
    def identities(self) -> list[str]:
        """Matched identities, each once, in face order."""
        return list(dict.fromkeys(f.identity for f in self.faces if f.identity is not None))

    @property
    def unknown_faces(self) -> int:
        return sum(1 for f in self.faces if f.identity is None)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "format": FORMAT,
            "bucket": self.bucket,
            "key": self.key,
            "etag": self.etag,
        }
        if self.error is not None:
            return {**data, "error": dict(self.error)}
        return {
            **data,
            "model_version": self.model_version,
            "identities": self.identities,
            "unknown_faces": self.unknown_faces,
            "faces": [f.to_json() for f in self.faces],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> QueryResult:
        if data.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} object")
        return cls(
            bucket=str(data["bucket"]),
            key=str(data["key"]),
            etag=str(data["etag"]),
            model_version=str(data.get("model_version", "")),
            faces=tuple(IdentifiedFace.from_json(f) for f in data.get("faces", ())),
            error=data.get("error"),
        )


@dataclass(frozen=True)
class StoredResult:
    """A result as read, with the ETag of its own bytes for a conditional replacement."""

    etag: str
    result: QueryResult | None
    """None when the object is not a readable result (it is then replaced)."""


class QueryResults:
    """Results of the queries bucket."""

    def __init__(self, store: ObjectStore, bucket: str) -> None:
        self.store = store
        self.bucket = bucket

    def read(self, key: str) -> StoredResult | None:
        """The result of the photo at ``key``, or None when it has none."""
        try:
            stored = self.store.get(self.bucket, result_key(key))
        except ObjectNotFoundError:
            return None
        try:
            result = QueryResult.from_json(json.loads(stored.data))
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("unreadable result %s: %s", result_key(key), exc)
            result = None
        return StoredResult(stored.info.etag, result)

    def commit(self, result: QueryResult) -> QueryResult | None:
        """Write ``result`` unless a result of the same photo version is there already.

        Returns the result now stored for that version (``result``, or the one a concurrent
        delivery wrote first); None when a result of another version won the race (the event
        of that version answers for it).
        """
        for _ in range(COMMIT_ATTEMPTS):
            previous = self.read(result.key)
            known = previous.result if previous is not None else None
            if known is not None and known.etag == result.etag:
                return known
            try:
                self.store.put(
                    self.bucket,
                    result_key(result.key),
                    json.dumps(result.to_json(), indent=1).encode(),
                    content_type="application/json",
                    if_match=previous.etag if previous is not None else None,
                    if_none_match=previous is None,
                )
            except PreconditionFailedError:
                continue  # written meanwhile: read what was written
            return result
        return None

    def delete(self, key: str) -> bool:
        """Remove the result of the photo at ``key``; whether there was one."""
        if not self.store.exists(self.bucket, result_key(key)):
            return False
        self.store.delete(self.bucket, result_key(key))
        return True

    def processed(self) -> dict[str, str]:
        """``photo key -> photo etag`` of every result: what reconcile compares against.

        A missing bucket holds no results (the source creates it with the first photo).
        """
        done: dict[str, str] = {}
        try:
            keys = [info.key for info in self.store.list(self.bucket, RESULTS_PREFIX)]
        except BucketNotFoundError:
            return {}
        for key in keys:
            photo = photo_key(key)
            stored = self.read(photo) if photo is not None else None
            if photo is not None and stored is not None and stored.result is not None:
                done[photo] = stored.result.etag
        return done
