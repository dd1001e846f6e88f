"""The gallery's commit record: what one source photo contributed, as one JSON object.

One record per source object (not per face) because a photo is the unit that events create,
replace and delete. Writing the record is the commit point of an enrollment: readers only
believe faces listed in a record, so crops and embeddings written before a crash, without
their record, are invisible (and collected by :meth:`Gallery.collect_orphans`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from facerank.faces.detect import Box

FORMAT = "facerank.gallery.record/v1"


def source_id(bucket: str, key: str) -> str:
    """Stable id of a source object: the record's file name, independent of its content."""
    return hashlib.sha256(f"{bucket}\0{key}".encode("utf-8", "surrogatepass")).hexdigest()[:24]


def face_id(bucket: str, key: str, etag: str, index: int) -> str:
    """Stable id of the ``index``-th enrolled face of one version of one photo.

    Deriving it from the content version makes enrollment idempotent (a redelivered event
    writes the same objects) while a replaced photo gets fresh ids, so its new faces never
    overwrite the old ones before the record switches.
    """
    digest = hashlib.sha256(f"{bucket}\0{key}\0{etag}".encode("utf-8", "surrogatepass"))
    return f"{digest.hexdigest()[:24]}-{index}"


@dataclass(frozen=True)
class EnrolledFace:
    face_id: str
    box: Box
    confidence: float
    alignment: str
    """``landmarks``, ``eyes`` or ``box``: how the face was aligned."""
    detector: str = "haar"
    """``ssd`` or ``haar``: which detector found the face (records written before detectors
    were named are all Haar's)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "face_id": self.face_id,
            "box": list(self.box),
            "confidence": round(self.confidence, 6),
            "alignment": self.alignment,
            "detector": self.detector,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EnrolledFace:
        x, y, w, h = (int(v) for v in data["box"])
        return cls(
            face_id=str(data["face_id"]),
            box=(x, y, w, h),
            confidence=float(data["confidence"]),
            alignment=str(data["alignment"]),
            detector=str(data.get("detector", "haar")),
        )


@dataclass(frozen=True)
class SourceRecord:
    """The faces one version (ETag) of one source photo put into the gallery."""

    identity: str
    bucket: str
    key: str
    etag: str
    faces_seen: int
    enrolled_at: datetime
    faces: tuple[EnrolledFace, ...]
    model_versions: tuple[str, ...] = field(default=())
    """Versions whose embeddings of every face were written before this record."""

    @property
    def source_id(self) -> str:
        return source_id(self.bucket, self.key)

    def with_model_version(self, version: str) -> SourceRecord:
        versions = tuple(sorted({*self.model_versions, version}))
        return SourceRecord(**{**self.__dict__, "model_versions": versions})

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "identity": self.identity,
            "source": {"bucket": self.bucket, "key": self.key, "etag": self.etag},
            "faces_seen": self.faces_seen,
            "enrolled_at": self.enrolled_at.isoformat(),
            "faces": [face.to_json() for face in self.faces],
            "model_versions": list(self.model_versions),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SourceRecord:
        """Parse a stored record; ``ValueError`` if it is not one of ours."""
        if data.get("format") != FORMAT:
            raise ValueError(f"not a gallery record (format {data.get('format')!r})")
        try:
            source = data["source"]
            return cls(
                identity=str(data["identity"]),
                bucket=str(source["bucket"]),
                key=str(source["key"]),
                etag=str(source["etag"]),
                faces_seen=int(data["faces_seen"]),
                enrolled_at=datetime.fromisoformat(data["enrolled_at"]),
                faces=tuple(EnrolledFace.from_json(f) for f in data["faces"]),
                model_versions=tuple(str(v) for v in data.get("model_versions", ())),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"malformed gallery record: {exc}") from None
