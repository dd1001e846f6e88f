"""The gallery of enrolled faces: crops, records and per-model-version embeddings."""

from facerank.gallery.gallery import Gallery, GalleryMatrix, StoredRecord
from facerank.gallery.identity import identity_from_key, normalise_identity
from facerank.gallery.index import EmbeddingIndex, IndexChange, Manifest
from facerank.gallery.records import EnrolledFace, SourceRecord, face_id, source_id
from facerank.gallery.segments import Segment

__all__ = [
    "EmbeddingIndex",
    "EnrolledFace",
    "Gallery",
    "GalleryMatrix",
    "IndexChange",
    "Manifest",
    "Segment",
    "SourceRecord",
    "StoredRecord",
    "face_id",
    "identity_from_key",
    "normalise_identity",
    "source_id",
]
