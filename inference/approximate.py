"""Approximate search of one segment: its rows kept as float16 in a FAISS flat index.

Why this, for galleries beyond one replica's memory: a replica's memory is its rows, and
float16 halves it (a replica holds twice the faces) while moving each similarity by about
1e-3, so rankings change only between near-ties. Partition and graph indexes were measured
and rejected for this gallery: a query's 2nd to 10th identities sit at nearly equal, low
similarities, where FAISS IVF-Flat found 47 % of the exact top 10 at 48 probes and 84 % at 256
(200k faces), an 8-bit scan found 98 %, and HNSW takes minutes to build a million rows on two
cores. Recall@10 against the exact search is measured by ``bench/bench_gallery_scale.py``.

Why per segment: segments are immutable, so each one's codes are built once when the segment
is loaded (one pass over its rows) and replace its float32 rows in memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import faiss
import numpy as np

from facerank.gallery import Segment
from inference.search import Match

CANDIDATES_PER_K = 10
"""Faces fetched per identity asked for: several faces of one person can rank before the
next person."""

faiss.omp_set_num_threads(1)
"""One query is one thread: the predictor answers concurrent requests on its own threads, and
FAISS's OpenMP team per call only contends with them."""


@dataclass(frozen=True)
class ApproximateSegment:
    """A segment's rows as float16 codes in FAISS, beside the rest of the segment."""

    rows: faiss.IndexScalarQuantizer
    members: Segment
    """The segment without its float32 rows (zero columns): identities and face ids."""

    @classmethod
    def build(cls, segment: Segment) -> ApproximateSegment:
        rows = faiss.IndexScalarQuantizer(
            segment.dim, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT
        )
        rows.add(np.ascontiguousarray(segment.vectors, dtype=np.float32))
        no_rows = np.zeros((len(segment), 0), np.float32)
        return cls(rows, Segment(no_rows, segment.codes, segment.names, segment.face_ids))

    def __len__(self) -> int:
        return len(self.members)

    @property
    def names(self) -> tuple[str, ...]:
        return self.members.names

    def rank(self, queries: np.ndarray, k: int, threshold: float) -> list[list[Match]]:
        """The ``k`` best identities per query among its best ``k * CANDIDATES_PER_K`` faces,
        each through its best face; ties by identity name, as the exact search breaks them."""
        wanted = min(len(self), k * CANDIDATES_PER_K)
        sims, rows = self.rows.search(np.ascontiguousarray(queries, dtype=np.float32), wanted)
        ranked = []
        for row_sims, row_ids in zip(sims.tolist(), rows.tolist(), strict=True):
            best: dict[int, tuple[float, int]] = {}
            for sim, row in zip(row_sims, row_ids, strict=True):
                if row >= 0:
                    best.setdefault(int(self.members.codes[row]), (min(1.0, max(-1.0, sim)), row))
            order = sorted(best.items(), key=lambda item: (-item[1][0], self.names[item[0]]))
            ranked.append([self._match(c, sim, row, threshold) for c, (sim, row) in order[:k]])
        return ranked

    def _match(self, code: int, sim: float, row: int, threshold: float) -> Match:
        distance = float(np.sqrt(max(0.0, 2.0 - 2.0 * sim)))
        return Match(
            identity=self.names[code],
            face_id=self.members.face_id(row),
            distance=distance,
            similarity=sim,
            match=distance <= threshold,
        )
