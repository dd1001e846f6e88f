"""Vectorised top-k search of query embeddings over a gallery, best face per identity.

Why this shape: the predictor answers "which identities look like this face", so a gallery
with ten photos of one person must not fill the top k with that person. Faces are therefore
laid out grouped by identity once, when a gallery index is built, and every query is then
one matrix product, one segmented max per identity (``np.maximum.reduceat``) and one
``np.partition`` over identities: no Python loop ever runs over faces, and only the rows of
the ``k`` identities found are read again (for their best face).

Distances are Euclidean between unit vectors, ``sqrt(2 - 2 cos)``, the metric triplet-loss
training optimises; the cosine is reported beside it as ``similarity``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from threadpoolctl import threadpool_limits

from facerank.gallery import Segment


@dataclass(frozen=True)
class Match:
    """One identity ranked for one query face, through its closest enrolled face."""

    identity: str
    face_id: str
    distance: float
    similarity: float
    match: bool


class Searchable(Protocol):
    """What :func:`search` needs: unit rows grouped by identity, in name order.

    :class:`GalleryIndex` (built in memory) and :class:`facerank.gallery.Segment` (loaded
    from the gallery index) both are.
    """

    @property
    def vectors(self) -> np.ndarray: ...
    @property
    def names(self) -> tuple[str, ...]: ...
    @property
    def starts(self) -> np.ndarray: ...
    def face_id(self, row: int) -> str: ...
    def __len__(self) -> int: ...


class Ranked(Protocol):
    """An index searched by its own means (approximately), for :func:`search_all`."""

    @property
    def names(self) -> tuple[str, ...]: ...
    def rank(self, queries: np.ndarray, k: int, threshold: float) -> list[list[Match]]: ...
    def __len__(self) -> int: ...


@dataclass(frozen=True)
class GalleryIndex:
    """Gallery vectors grouped by identity, ready for :func:`search`. Build with :meth:`build`.

    ``names[c]`` is identity ``c``; its faces are rows ``starts[c]`` up to ``starts[c + 1]``
    (or the end). Identities and faces within one are in name order, which is what breaks
    ties deterministically.
    """

    face_ids: tuple[str, ...]
    identities: tuple[str, ...]
    vectors: np.ndarray
    """``(len(face_ids), dim)`` float32 unit rows, read-only."""
    names: tuple[str, ...]
    starts: np.ndarray

    @classmethod
    def build(
        cls, face_ids: Sequence[str], identities: Sequence[str], vectors: np.ndarray
    ) -> GalleryIndex:
        """Laid out as a gallery segment is (:meth:`facerank.gallery.Segment.build`), with
        the ids as Python strings for callers that index them."""
        segment = Segment.build(face_ids, identities, vectors)
        rows = range(len(segment))
        return cls(
            face_ids=tuple(segment.face_id(r) for r in rows),
            identities=tuple(segment.identity(r) for r in rows),
            vectors=np.ascontiguousarray(segment.vectors),
            names=segment.names,
            starts=segment.starts,
        )

    def __len__(self) -> int:
        return len(self.face_ids)

    def face_id(self, row: int) -> str:
        return self.face_ids[row]


def one_blas_thread() -> None:
    """Make every BLAS call of this process single-threaded; the predictor calls it at start.

    Why: a one-face query is a matrix-vector product, and the predictor runs concurrent
    requests on their own threads. OpenBLAS's own thread team per call then only contends:
    measured on two cores, a 65,536 x 128 product took 29 ms alone and 3.4 s at 16 concurrent
    callers with OpenBLAS's threads, 2.1 ms and 30 ms with one (``bench_gallery_scale.py``
    applies this before timing either side).
    """
    threadpool_limits(limits=1, user_api="blas")


def search(
    index: Searchable,
    queries: np.ndarray,
    k: int,
    threshold: float,
) -> list[list[Match]]:
    """The ``k`` closest identities to each row of ``queries``, closest first.

    Returns one list per query row, each ``min(k, identities)`` long (empty for an empty
    gallery). Equal distances rank by identity name, and within an identity the face with the
    smaller id wins, so the same gallery always answers the same way.
    """
    if k < 1:
        raise ValueError(f"k must be positive, got {k}")
    queries = np.asarray(queries, dtype=np.float32)
    if queries.ndim != 2:
        raise ValueError(f"queries must be (n, dim), got shape {queries.shape}")
    if len(index) == 0 or len(queries) == 0:
        return [[] for _ in range(len(queries))]
    if queries.shape[1] != index.vectors.shape[1]:
        raise ValueError(
            f"query dimension {queries.shape[1]} != gallery dimension {index.vectors.shape[1]}"
        )
    sims = queries @ index.vectors.T
    best = np.clip(np.maximum.reduceat(sims, index.starts, axis=1), -1.0, 1.0)
    k = min(k, len(index.names))
    top = np.stack([_top_identities(row, k) for row in best])
    top_sims = np.take_along_axis(best, top, axis=1).astype(np.float64)
    top_faces = _best_faces(sims, top, index)
    distances = np.sqrt(np.maximum(0.0, 2.0 - 2.0 * top_sims))
    return [
        [
            Match(
                identity=index.names[c],
                face_id=index.face_id(f),
                distance=float(d),
                similarity=float(s),
                match=bool(d <= threshold),
            )
            for c, f, d, s in zip(codes, faces, dists, row_sims, strict=True)
        ]
        for codes, faces, dists, row_sims in zip(
            top.tolist(), top_faces.tolist(), distances, top_sims, strict=True
        )
    ]


def search_all(
    indexes: Sequence[Searchable | Ranked], queries: np.ndarray, k: int, threshold: float
) -> list[list[Match]]:
    """:func:`search` over several indexes (the segments of one gallery) as if they were one.

    Exact: an identity among the overall ``k`` best is among the ``k`` best of the index
    holding its best face, so merging each index's top ``k`` by identity loses nothing. Ties
    break as :func:`search` breaks them: identity name, then the smaller face id.
    """
    parts = [_rank(index, queries, k, threshold) for index in indexes if len(index)]
    if len(parts) < 2:
        return parts[0] if parts else [[] for _ in range(len(queries))]
    merged = []
    for candidates in zip(*parts, strict=True):
        best: dict[str, Match] = {}
        for match in (m for matches in candidates for m in matches):
            held = best.get(match.identity)
            if held is None or (-match.similarity, match.face_id) < (
                -held.similarity,
                held.face_id,
            ):
                best[match.identity] = match
        ranked = sorted(best.values(), key=lambda m: (-m.similarity, m.identity))
        merged.append(ranked[:k])
    return merged


def _rank(
    index: Searchable | Ranked, queries: np.ndarray, k: int, threshold: float
) -> list[list[Match]]:
    """An index that ranks by other means (:class:`inference.approximate.ApproximateSegment`)
    brings its own ``rank``; the others are searched exactly."""
    rank = getattr(index, "rank", None)
    return rank(queries, k, threshold) if rank is not None else search(index, queries, k, threshold)


def _best_faces(sims: np.ndarray, top: np.ndarray, index: Searchable) -> np.ndarray:
    """``(queries, k)`` row of the first face reaching each top identity's best cosine.

    Why only the top identities: the rows of ``k`` identities are all that is read, where a
    pass over every row (as the identity maxima take) costs as much again at a million faces.
    Cosines are clipped as the maxima were, so a tie at 1.0 goes to the first face.
    """
    starts = index.starts[top]
    counts = np.append(index.starts[1:], len(index))[top] - starts
    offsets = np.arange(int(counts.max()))
    rows = starts[..., None] + np.minimum(offsets, counts[..., None] - 1)
    gathered = np.clip(np.take_along_axis(sims, rows.reshape(len(sims), -1), 1), -1.0, 1.0)
    gathered = np.where(offsets < counts[..., None], gathered.reshape(rows.shape), -np.inf)
    return np.take_along_axis(rows, gathered.argmax(axis=2)[..., None], 2)[..., 0]


def _top_identities(best: np.ndarray, k: int) -> np.ndarray:
    """Codes of the ``k`` best identities of one query, closest first, ties by code (the
    identities are in name order).

    Why a float partition, then a sort of the few at or above the ``k``-th cosine: one pass
    over the identities finds the cut, and every tie at the cut is kept for the sort, so the
    order is the same every time without building a ranking key per identity.
    """
    if k < len(best):
        cut = np.partition(best, len(best) - k)[len(best) - k]
        candidates = np.flatnonzero(best >= cut)
    else:
        candidates = np.arange(len(best))
    return candidates[np.lexsort((candidates, -best[candidates]))][:k]
