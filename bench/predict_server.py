"""The real KServe predictor over a synthetic gallery: the server half of ``bench_predict.py``.

    .venv/bin/python bench/predict_server.py --faces 100000 --search brute --port 8123

Why a separate process: predict latency must include what a client really pays (HTTP, KServe's
parsing, JPEG decoding, Haar detection, embedding, search, JSON), and the benchmark clients
must not share the server's GIL. Why synthetic: a million real enrolled faces do not exist
here, and ``lbp-v0``'s 5,782-D vectors would take 23 GB at that size; the gallery is instead
seeded 128-D unit vectors (the dimension of the pretrained descriptor planned as the default),
and the pipeline's LBP vectors are projected to 128-D so that queries match it.

Nothing here touches the store: the model gets an empty folder store it never reads, and its
serving pair is set directly instead of by ``load()`` (which would poll the store).
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from kserve import ModelServer

import inference.snapshot
from facerank.embedding import LbpEmbedder, l2_normalize
from facerank.faces.align import ChipSpec
from facerank.pipeline import FacePipeline
from facerank.settings import Settings
from facerank.storage import FolderStore
from inference.follower import ServingPair
from inference.model import FacerankModel
from inference.search import GalleryIndex, Match
from inference.snapshot import GallerySnapshot

DIM = 128
FACES_PER_IDENTITY = 5
MODEL_VERSION = "bench-lbp128"
SEED = 20240601
_CHUNK = 65_536
"""Rows generated at a time, so building 1M faces never holds float64 or repeated temporaries
of the whole gallery (each full float32 copy is 0.5 GB)."""


class ProjectedLbp:
    """``lbp-v0`` projected to :data:`DIM` by a fixed seeded Gaussian matrix, re-normalised.

    Bench code, not a product embedder: it costs what a real embedder's tail costs (one batch
    through LBP plus a small matrix product) and yields vectors of the gallery's dimension.
    """

    def __init__(self, dim: int = DIM, seed: int = SEED) -> None:
        self._lbp = LbpEmbedder()
        rng = np.random.default_rng(seed)
        self._projection = rng.standard_normal((self._lbp.dim, dim), dtype=np.float32)

    @property
    def model_version(self) -> str:
        return MODEL_VERSION

    @property
    def chip(self) -> ChipSpec:
        return self._lbp.chip

    @property
    def dim(self) -> int:
        return self._projection.shape[1]

    @property
    def match_threshold(self) -> float:
        return self._lbp.match_threshold

    def embed(self, chips: np.ndarray) -> np.ndarray:
        return l2_normalize(self._lbp.embed(chips) @ self._projection)


def synthetic_gallery(
    faces: int, dim: int = DIM, per_identity: int = FACES_PER_IDENTITY, seed: int = SEED
) -> tuple[list[str], list[str], np.ndarray]:
    """``(face_ids, identities, vectors)``: seeded unit vectors, ``per_identity`` per person.

    Each identity's faces scatter around its own random centre, so faces of one person are
    nearer each other than to others (as in a real gallery), which is what makes the
    best-face-per-identity aggregation do real work. Every process building the same size
    gets the same gallery.
    """
    rng = np.random.default_rng(seed)
    vectors = np.empty((faces, dim), dtype=np.float32)
    for start in range(0, faces, _CHUNK):
        rows = vectors[start : start + _CHUNK]
        first, last = start // per_identity, (start + len(rows) - 1) // per_identity
        centres = rng.standard_normal((last - first + 1, dim), dtype=np.float32)
        owner = np.arange(start, start + len(rows)) // per_identity - first
        rows[:] = centres[owner] + 0.5 * rng.standard_normal(rows.shape, dtype=np.float32)
        rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    identities = [f"person-{i // per_identity:07d}" for i in range(faces)]
    face_ids = [f"face-{i:08d}" for i in range(faces)]
    return face_ids, identities, vectors


def synthetic_index(faces: int) -> GalleryIndex:
    """The gallery of ``faces`` faces as a search index; the generated matrix is not kept."""
    return GalleryIndex.build(*synthetic_gallery(faces))


def brute_force_search(
    index: GalleryIndex,
    queries: np.ndarray,
    k: int,
    threshold: float,
) -> list[list[Match]]:
    """The naive baseline, a drop-in for :func:`inference.search.search`.

    Per query: one full distance vector (one dot product, ``sqrt(2 - 2 cos)``), a full
    ``argsort`` over every face, then a Python walk down that order collecting faces of
    identities not yet seen until ``k`` distinct ones are found. What someone would write
    first; the dot product rather than ``((gallery - q) ** 2).sum`` keeps the baseline from
    losing merely by allocating a gallery-sized temporary per query.
    """
    results = []
    for query in np.asarray(queries, dtype=np.float32):
        sims = np.clip(index.vectors @ query, -1.0, 1.0)
        distances = np.sqrt(np.maximum(0.0, 2.0 - 2.0 * sims.astype(np.float64)))
        matches: list[Match] = []
        seen: set[str] = set()
        for row in np.argsort(distances, kind="stable"):
            identity = index.identities[row]
            if identity in seen:
                continue
            seen.add(identity)
            distance = float(distances[row])
            matches.append(
                Match(
                    identity, index.face_ids[row], distance, float(sims[row]), distance <= threshold
                )
            )
            if len(matches) == k:
                break
        results.append(matches)
    return results


def serve(faces: int, searcher: str, port: int) -> None:
    """Build the gallery and serve it with ``searcher`` until terminated."""
    if searcher == "brute":
        # ``GallerySnapshot.search`` looks ``search_all`` up in its module on every request:
        # rebinding that name swaps the search step and nothing else.
        inference.snapshot.search_all = lambda indexes, *args: brute_force_search(indexes[0], *args)
    with tempfile.TemporaryDirectory(prefix="facerank-bench-") as empty:
        settings = Settings(data_dir=Path(empty))
        model = FacerankModel(settings, FolderStore(settings.buckets_dir))
        pipeline = FacePipeline.from_settings(settings, ProjectedLbp())
        snapshot = GallerySnapshot(MODEL_VERSION, (synthetic_index(faces),))
        model.serving = ServingPair(pipeline, snapshot)
        model.ready = True
        ModelServer(http_port=port, workers=1, enable_grpc=False).start([model])


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=int, required=True)
    parser.add_argument("--search", choices=("facerank", "brute"), required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    serve(args.faces, args.search, args.port)


if __name__ == "__main__":
    main()
