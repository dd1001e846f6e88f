"""Immutable segments: many faces of one model version in two objects a reader loads whole.

A segment is the unit the gallery index (:mod:`facerank.gallery.index`) reads, writes and
drops. Its two objects::

    <name>.vec   float32 little-endian rows, ``rows x dim``, nothing else
    <name>.ids   one JSON header line, then int32 identity codes, then fixed-width face ids

Why two: a writer that only needs to know which faces a segment holds (to skip a duplicate
or find the segment of a removed face) reads ``.ids``, about a twentieth of the bytes.
Why raw arrays rather than ``.npy``/``.npz``: ``np.frombuffer`` over the bytes of one GET is
the whole decode, so a reader's memory is the objects' size and nothing more (the vectors are
copied once into numpy's own allocation, see :meth:`Segment.from_bytes`, and the bytes freed).

Rows are sorted by (identity, face id) when a segment is built, so search can take each
identity's best face with one segmented reduction and ties break the same way every time.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

FORMAT = "facerank.gallery.segment/v1"
VECTORS = ".vec"
IDS = ".ids"


@dataclass(frozen=True)
class Segment:
    """Faces of one segment, identity-sorted. Arrays are read-only."""

    vectors: np.ndarray
    """``(rows, dim)`` float32 unit rows."""
    codes: np.ndarray
    """``(rows,)`` int32, non-decreasing: row ``i`` belongs to ``names[codes[i]]``."""
    names: tuple[str, ...]
    face_ids: np.ndarray
    """``(rows,)`` fixed-width UTF-8 bytes (``S<n>``)."""

    @classmethod
    def build(
        cls, face_ids: Sequence[str], identities: Sequence[str], vectors: np.ndarray
    ) -> Segment:
        """A segment of these faces, sorted by (identity, face id)."""
        if not len(face_ids) == len(identities) == len(vectors):
            raise ValueError("face_ids, identities and vectors must describe the same faces")
        ids = np.array([f.encode() for f in face_ids], dtype=bytes) if len(face_ids) else _no_ids()
        names, codes = np.unique(np.array(list(identities), dtype=str), return_inverse=True)
        order = np.lexsort((ids, codes))
        rows = np.asarray(vectors, dtype=np.float32)
        if rows.ndim != 2:
            rows = rows.reshape(len(face_ids), -1) if len(face_ids) else np.zeros((0, 0), "f4")
        return cls.from_arrays(
            rows[order], codes[order].astype(np.int32), tuple(str(n) for n in names), ids[order]
        )

    @classmethod
    def from_arrays(
        cls, vectors: np.ndarray, codes: np.ndarray, names: tuple[str, ...], face_ids: np.ndarray
    ) -> Segment:
        for array in (vectors, codes, face_ids):
            array.setflags(write=False)
        return cls(vectors, codes, names, face_ids)

    @classmethod
    def merge(cls, segments: Iterable[Segment]) -> Segment:
        """One segment holding the rows of all ``segments`` (which share no face)."""
        parts = [s for s in segments if len(s)]
        if not parts:
            raise ValueError("nothing to merge")
        names = sorted({n for s in parts for n in s.names})
        position = {n: i for i, n in enumerate(names)}
        codes = np.concatenate(
            [np.array([position[n] for n in s.names], np.int32)[s.codes] for s in parts]
        )
        ids = np.concatenate([s.face_ids.astype(_widest(parts)) for s in parts])
        vectors = np.concatenate([s.vectors for s in parts])
        order = np.lexsort((ids, codes))
        return cls.from_arrays(vectors[order], codes[order], tuple(names), ids[order])

    def without(self, removed: np.ndarray) -> Segment | None:
        """This segment minus the faces in ``removed`` (bytes ids); None if nothing is left."""
        keep = ~np.isin(self.face_ids, removed)
        if not keep.any():
            return None
        used, codes = np.unique(self.codes[keep], return_inverse=True)
        return Segment.from_arrays(
            self.vectors[keep],
            codes.astype(np.int32),
            tuple(self.names[c] for c in used),
            self.face_ids[keep],
        )

    def __len__(self) -> int:
        return len(self.face_ids)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    @cached_property
    def starts(self) -> np.ndarray:
        """Row where each identity's faces begin (every name has at least one row).

        Cached: search reads it on every query, and computing it is a binary search per
        identity (measured: three per query took a third of a 1M-face query's time)."""
        starts = np.searchsorted(self.codes, np.arange(len(self.names))).astype(np.intp)
        starts.setflags(write=False)
        return starts

    def face_id(self, row: int) -> str:
        return bytes(self.face_ids[row]).decode()

    def identity(self, row: int) -> str:
        return self.names[int(self.codes[row])]

    # --- the two objects --------------------------------------------------------------------

    def vectors_bytes(self) -> bytes:
        return np.ascontiguousarray(self.vectors, dtype="<f4").tobytes()

    def ids_bytes(self) -> bytes:
        header = {
            "format": FORMAT,
            "rows": len(self),
            "dim": self.dim,
            "id_bytes": self.face_ids.dtype.itemsize,
            "names": list(self.names),
        }
        head = json.dumps(header, ensure_ascii=False).encode()
        head += b" " * (-(len(head) + 1) % 8) + b"\n"  # arrays start 8-byte aligned
        return head + self.codes.astype("<i4").tobytes() + self.face_ids.tobytes()

    @classmethod
    def from_bytes(cls, ids: bytes, vectors: bytes | None) -> Segment:
        """Decode a segment's objects; ``vectors=None`` reads membership only (zero rows wide).

        ``ValueError`` for bytes that are not a segment of this format.
        """
        end = ids.find(b"\n")
        header = json.loads(ids[:end]) if end > 0 else None
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            raise ValueError(f"not a gallery segment (expected format {FORMAT!r})")
        rows, dim, width = int(header["rows"]), int(header["dim"]), int(header["id_bytes"])
        codes = np.frombuffer(ids, "<i4", rows, end + 1)
        face_ids = np.frombuffer(ids, f"S{width}", rows, end + 1 + 4 * rows)
        if vectors is None:
            matrix = np.zeros((rows, 0), np.float32)
        elif len(vectors) != rows * dim * 4:
            raise ValueError(f"segment vectors hold {len(vectors)} bytes, not {rows}x{dim} floats")
        else:
            # Copied out of the bytes object into numpy's own allocation, which Linux backs
            # with huge pages: a full scan of the frombuffer view measured 35 % slower.
            matrix = np.frombuffer(vectors, "<f4").reshape(rows, dim).copy()
        return cls.from_arrays(matrix, codes, tuple(str(n) for n in header["names"]), face_ids)


def _no_ids() -> np.ndarray:
    return np.zeros(0, dtype="S1")


def _widest(segments: Sequence[Segment]) -> np.dtype:
    return np.dtype(f"S{max(s.face_ids.dtype.itemsize for s in segments)}")
