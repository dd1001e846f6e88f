"""Switching the deployment to another model version without ever mixing two in one query.

The order is the whole point: (1) name the version pending, so every enrollment from now on
embeds with it too; (2) re-embed the faces enrolled before, until a pass finds none missing;
(3) embed the unknown faces of query photos with it and regroup them, at the threshold the
predictor will serve it with (:mod:`facerank.unknown`); (4) only then make it active, in one
conditional write. Predictors watch the pointer and load
the new model together with that version's gallery, which is complete by then.

A crash anywhere leaves the old version active (and, at worst, the new one pending, which a
re-run resumes: every step is idempotent).
"""

from __future__ import annotations

import logging

from facerank.embedding import Embedder
from facerank.gallery import Gallery
from facerank.openset import index_threshold
from facerank.registry.pointer import ModelRef
from facerank.registry.registry import ModelRegistry
from facerank.reindex import Progress, ReindexResult, Workers, reindex
from facerank.settings import Settings
from facerank.unknown import UnknownFaces

log = logging.getLogger(__name__)


def switch_model(
    registry: ModelRegistry,
    gallery: Gallery,
    ref: ModelRef,
    embedder: Embedder,
    *,
    settings: Settings,
    reason: str,
    progress: Progress | None = None,
    workers: Workers | None = None,
) -> ReindexResult:
    """Make ``ref`` (loaded as ``embedder``) the active model once the gallery and the
    unknown faces hold it; ``workers`` re-embed the gallery in parallel processes,
    ``settings`` decide the threshold unknown faces are regrouped at."""
    if embedder.model_version != ref.version:
        raise ValueError(f"embedder {embedder.model_version} is not {ref.version}")
    registry.begin_switch(ref)
    log.info("switching to %s (%s): re-embedding the gallery", ref.version, reason)
    result = reindex(gallery, embedder, progress=progress, workers=workers)
    unknown = UnknownFaces(gallery.store, gallery.bucket)
    if unknown.groups().faces:  # else nothing to regroup, and no index to read for a threshold
        threshold = index_threshold(gallery.index(ref.version), embedder.match_threshold, settings)
        unknown.follow(embedder, threshold)
    registry.complete_switch(ref.version, reason)
    log.info(
        "%s is active: %d record(s), %d re-embedded", ref.version, result.records, result.embedded
    )
    return result
