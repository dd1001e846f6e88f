"""Approximate search of one segment: an 8-bit FAISS scan for candidates, an exact re-rank.

Why 8-bit scalar quantization and not an inverted file or a graph: measured on the
benchmark's gallery (``bench/bench_gallery_scale.py``), a query's 2nd to 10th identities sit
at nearly equal, low similarities, the case partition-based indexes do worst: FAISS IVF-Flat
found 47 % of the exact top 10 at 48 probes and 84 % at 256 (of 1,788 lists, 200k faces),
and HNSW takes minutes to build a million rows on two cores. A scan of 8-bit codes reads a
quarter of the bytes of the float32 matrix, which is what bounds a one-face query, and misses
almost nothing; re-ranking its candidates against the float32 rows makes the reported
similarities exact and the ranking the exact search's whenever the candidates hold the
answer (recall@10 is measured against the exact search by the benchmark).

Why per segment: segments are immutable, so each one's codes are built once when the segment
is loaded (a pass over its rows, no training beyond per-dimension ranges) and dropped with it.
The codes add a quarter to the segment's memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import faiss
import numpy as np

from facerank.gallery import Segment
from inference.search import Match, search

CANDIDATES_PER_K = 10
"""Faces taken from the 8-bit scan per identity asked for: several faces of one person can
rank before the next person, and quantization can swap near neighbours."""

faiss.omp_set_num_threads(1)
"""One query is one thread: the predictor answers concurrent requests on its own threads, and
FAISS's OpenMP team per call only contends with them."""


@dataclass(frozen=True)
class ApproximateSegment:
    """A segment with 8-bit codes of its rows beside it."""

    segment: Segment
    codes: faiss.IndexScalarQuantizer

    @classmethod
    def build(cls, segment: Segment) -> ApproximateSegment:
        rows = np.ascontiguousarray(segment.vectors, dtype=np.float32)
        codes = faiss.IndexScalarQuantizer(
            segment.dim, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT
        )
        codes.train(rows)
        codes.add(rows)
        return cls(segment, codes)

    def __len__(self) -> int:
        return len(self.segment)

    @property
    def names(self) -> tuple[str, ...]:
        return self.segment.names

    def rank(self, queries: np.ndarray, k: int, threshold: float) -> list[list[Match]]:
        """The ``k`` best identities per query among the scan's candidates, ranked exactly."""
        wanted = min(len(self), k * CANDIDATES_PER_K)
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        _, rows = self.codes.search(queries, wanted)
        return [
            search(self._candidates(found[found >= 0]), query[None, :], k, threshold)[0]
            for query, found in zip(queries, rows, strict=True)
        ]

    def _candidates(self, rows: np.ndarray) -> Segment:
        """The segment cut down to ``rows``, still identity-sorted (row order is)."""
        rows = np.sort(rows)
        used, codes = np.unique(self.segment.codes[rows], return_inverse=True)
        return Segment(
            self.segment.vectors[rows],
            codes.astype(np.int32),
            tuple(self.segment.names[c] for c in used),
            self.segment.face_ids[rows],
        )
