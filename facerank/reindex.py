"""Re-embedding: give every enrolled face an embedding by another model version.

Crops are the gallery's truth and embeddings are derived (see :mod:`facerank.gallery`), so a
new model re-embeds from the stored crops, re-aligned to its own chip layout, without the
original photos. Each record gains the version through a conditional write over the record as
read, so re-embedding races safely with enrollments and removals: a record that changed is
read again on the next pass, one that vanished is simply gone.

:func:`reindex` repeats passes until one finds nothing missing; the model switch
(:mod:`facerank.registry.switch`) calls it between naming a version pending (from which moment
enrollments embed with it too) and making it active.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from facerank.embedding import Embedder
from facerank.errors import ObjectNotFoundError, PreconditionFailedError
from facerank.faces.align import GALLERY_CROP_256, rechip
from facerank.gallery import Gallery
from facerank.gallery.gallery import StoredRecord

if TYPE_CHECKING:  # the pipeline imports the registry, which imports this module
    from facerank.pipeline import Face, FacePipeline

log = logging.getLogger(__name__)

MAX_PASSES = 20
"""A pass only misses records changed while it ran; this many passes mean something is wrong."""

Progress = Callable[[int, int], None]
"""``(records done, records to do)`` after each record of a pass."""


class ReindexIncompleteError(RuntimeError):
    """Records kept changing (or failing) through every pass."""


@dataclass(frozen=True)
class ReindexResult:
    model_version: str
    records: int
    """Records that hold the version at the end."""
    embedded: int
    """Records this run embedded (the others had it already)."""
    passes: int


def embed_crops(embedder: Embedder, crops: Sequence[np.ndarray]) -> np.ndarray:
    """Embeddings of stored gallery crops, each re-aligned to the embedder's chip."""
    chips = np.stack([rechip(crop, GALLERY_CROP_256, embedder.chip) for crop in crops])
    return embedder.embed(chips)


def embed_served(
    pipeline: FacePipeline,
    faces: Sequence[Face],
    crops: Sequence[np.ndarray],
    embedders: Mapping[str, Embedder],
) -> dict[str, np.ndarray]:
    """Embeddings of ``faces`` by every served version: the pipeline's own from chips aligned
    on the photo, the others from the gallery crops, as re-embedding computes them."""
    return {
        version: pipeline.embed(faces)
        if embedder is pipeline.embedder
        else embed_crops(embedder, crops)
        for version, embedder in embedders.items()
    }


def add_version(gallery: Gallery, stored: StoredRecord, embedder: Embedder) -> bool:
    """Embed one record's faces with ``embedder`` and add them, if the record is unchanged.

    True when the record holds the version afterwards; False when it changed or vanished
    meanwhile (read it again).
    """
    record = stored.record
    if record is None:
        return True  # unreadable: nothing a model can add; reconcile owns it
    if embedder.model_version in record.model_versions:
        return True
    try:
        crops = [gallery.crop(face.face_id) for face in record.faces]
        vectors = embed_crops(embedder, crops) if crops else np.zeros((0, embedder.dim), np.float32)
        gallery.add_model_version(stored, embedder.model_version, vectors)
    except (ObjectNotFoundError, PreconditionFailedError):
        return False
    return True


def reindex(
    gallery: Gallery, embedder: Embedder, *, progress: Progress | None = None
) -> ReindexResult:
    """Passes over the gallery until every record holds ``embedder``'s version."""
    version = embedder.model_version
    embedded = 0
    for passes in range(1, MAX_PASSES + 1):
        keys = list(gallery.record_versions())
        missing = 0
        for done, key in enumerate(keys, start=1):
            stored = gallery.read_record(key)
            record = None if stored is None else stored.record
            if stored is not None and record is not None and version not in record.model_versions:
                missing += 1
                embedded += add_version(gallery, stored, embedder)
            if progress is not None:
                progress(done, len(keys))
        if missing == 0:
            log.info("gallery complete for %s after %d pass(es)", version, passes)
            return ReindexResult(version, len(keys), embedded, passes)
        log.info(
            "pass %d re-embedded %d record(s) with %s; checking again", passes, missing, version
        )
    raise ReindexIncompleteError(f"records kept changing through {MAX_PASSES} passes for {version}")
