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
import multiprocessing
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from facerank.embedding import Embedder
from facerank.errors import ObjectNotFoundError, PreconditionFailedError
from facerank.faces.align import GALLERY_CROP_256, rechip
from facerank.gallery import Gallery
from facerank.gallery.gallery import StoredRecord
from facerank.settings import Settings
from facerank.storage import open_store

if TYPE_CHECKING:  # the pipeline imports the registry, which imports this module
    from facerank.pipeline import Face, FacePipeline
    from facerank.registry.pointer import ModelRef

log = logging.getLogger(__name__)

BATCH = 32
"""Records per embedding call and per index change in a re-embedding pass."""
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


@dataclass(frozen=True)
class Workers:
    """Re-embedding spread over ``count`` local processes, each loading ``ref`` itself.

    Records are sharded by key, so workers never touch one record twice in a pass and race
    only on the index manifest, whose conditional writes keep every update (see
    :mod:`facerank.gallery.index`). A cluster runs the same shards as pods (README, Scale out).
    """

    settings: Settings
    ref: ModelRef
    count: int


def reindex(
    gallery: Gallery,
    embedder: Embedder,
    *,
    progress: Progress | None = None,
    workers: Workers | None = None,
) -> ReindexResult:
    """Passes over the gallery until every record holds ``embedder``'s version."""
    version = embedder.model_version
    embedded = 0
    with _runner(gallery, embedder, workers) as run_pass:
        for passes in range(1, MAX_PASSES + 1):
            keys = list(gallery.record_versions())
            missing, done = run_pass(keys, progress)
            embedded += done
            if missing == 0:
                # A crash between a record write and its index write leaves the index behind
                # the records; the switch must not activate a version whose index lacks faces.
                gallery.repair_indexes([version])
                log.info("gallery complete for %s after %d pass(es)", version, passes)
                return ReindexResult(version, len(keys), embedded, passes)
            log.info(
                "pass %d re-embedded %d record(s) with %s; checking again", passes, missing, version
            )
    raise ReindexIncompleteError(f"records kept changing through {MAX_PASSES} passes for {version}")


PassRunner = Callable[[Sequence[str], "Progress | None"], tuple[int, int]]
"""One pass over record keys: ``(records missing the version, records given it)``."""


@contextmanager
def _runner(gallery: Gallery, embedder: Embedder, workers: Workers | None) -> Iterator[PassRunner]:
    """Passes in this process, or sharded over a pool of worker processes kept for all."""
    if workers is None or workers.count <= 1:
        yield lambda keys, progress: embed_pass(gallery, embedder, keys, progress)
        return
    context = multiprocessing.get_context("spawn")  # TensorFlow does not survive a fork
    with ProcessPoolExecutor(
        workers.count,
        mp_context=context,
        initializer=_start_worker,
        initargs=(workers.settings, workers.ref, gallery.bucket),
    ) as pool:

        def run_pass(keys: Sequence[str], progress: Progress | None) -> tuple[int, int]:
            shards = [keys[i :: workers.count] for i in range(workers.count)]
            missing = embedded = finished = 0
            for shard_missing, shard_embedded, size in pool.map(_worker_pass, shards):
                missing, embedded, finished = (
                    missing + shard_missing,
                    embedded + shard_embedded,
                    finished + size,
                )
                if progress is not None:
                    progress(finished, len(keys))
            return missing, embedded

        yield run_pass


def embed_pass(
    gallery: Gallery, embedder: Embedder, keys: Sequence[str], progress: Progress | None = None
) -> tuple[int, int]:
    """Give the records at ``keys`` that lack it ``embedder``'s version, :data:`BATCH` records
    per embedding call and per index change: ``(records missing it, records given it)``."""
    version = embedder.model_version
    missing = embedded = 0
    for start in range(0, len(keys), BATCH):
        batch = []
        for key in keys[start : start + BATCH]:
            stored = gallery.read_record(key)
            record = None if stored is None else stored.record
            if stored is not None and record is not None and version not in record.model_versions:
                batch.append(stored)
        missing += len(batch)
        embedded += _embed_batch(gallery, batch, embedder)
        if progress is not None:
            progress(min(start + BATCH, len(keys)), len(keys))
    return missing, embedded


def _embed_batch(gallery: Gallery, batch: Sequence[StoredRecord], embedder: Embedder) -> int:
    """One embedding call for every face of ``batch``; records whose crops are gone (removed
    meanwhile) are left to the next pass."""
    readable: list[tuple[StoredRecord, list[np.ndarray]]] = []
    for stored in batch:
        assert stored.record is not None  # noqa: S101 - embed_pass keeps readable ones only
        try:
            readable.append((stored, [gallery.crop(f.face_id) for f in stored.record.faces]))
        except ObjectNotFoundError:
            continue
    crops = [crop for _, record_crops in readable for crop in record_crops]
    vectors = embed_crops(embedder, crops) if crops else np.zeros((0, embedder.dim), np.float32)
    items, at = [], 0
    for stored, record_crops in readable:
        items.append((stored, vectors[at : at + len(record_crops)]))
        at += len(record_crops)
    return gallery.add_model_versions(embedder.model_version, items)


_worker: tuple[Gallery, Embedder] | None = None
"""A worker process's gallery and loaded model, set once by :func:`_start_worker`."""


def _start_worker(settings: Settings, ref: ModelRef, bucket: str) -> None:
    # Imported here: facerank.registry imports this module (the switch re-embeds).
    from facerank.registry.locate import load_model

    global _worker  # one per worker process, loaded before its first shard
    _worker = (Gallery(open_store(settings), bucket), load_model(ref, settings))


def _worker_pass(keys: Sequence[str]) -> tuple[int, int, int]:
    assert _worker is not None  # noqa: S101 - the pool's initializer sets it
    gallery, embedder = _worker
    return (*embed_pass(gallery, embedder, keys), len(keys))
