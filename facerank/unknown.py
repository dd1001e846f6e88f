"""Unknown faces: faces of query photos that matched nobody, kept and grouped into candidates.

Layout in the gallery bucket, beside the enrolled faces and never read by the predictor::

    unknown/faces/<face_id>/crop.png              the aligned crop (GALLERY_CROP_256 layout)
    unknown/faces/<face_id>/<model_version>.f32   its embedding by that model
    unknown/groups.json                           every unknown face: source photo, box, group

Why one document for the grouping: a new face may join a group, or bridge two that then merge,
and a removed face may split one; every such change touches several faces' groups at once. One
object replaced with a conditional put makes each change atomic and loses none when identify
pods work concurrently (a loser reads again and redoes its change). Crops and embeddings are
objects of their own, written before the document names them, so the document stays small.

Grouping compares faces with group centres (the normalised mean of a group's embeddings) at the
model's match threshold, kept incrementally: a new face joins the group whose centre it
matches, or starts one, and groups whose centres come to match merge into the oldest; removing
faces regroups what is left of their groups. Centres rather than single links: with single
linkage one look-alike chains two people together, and measured on AT&T's strangers that
halved the groups' precision. ``face_id`` is derived from the photo's version, so a redelivered
event adds nothing new.

Groups are computed with one model version, named in the document. The model switch
(:mod:`facerank.registry.switch`) calls :meth:`UnknownFaces.follow` after re-embedding the
gallery and before making the new version active: every face is embedded with it from its
crop (as the gallery is) and the faces are regrouped with it, so the groups are ready when the
predictor starts serving it and no comparison ever mixes versions. A writer keeps grouping
with the document's version while it still serves it (during a switch, the pending one), and
regroups with its active version only when the document's is not served at all: a switch that
was abandoned, or faces kept by a writer that read the pointer before the switch began.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import numpy as np

from facerank.embedding import Embedder
from facerank.errors import FacerankError, ObjectNotFoundError, PreconditionFailedError
from facerank.gallery.gallery import crop_from_png, crop_png, vector_bytes, vector_from_bytes
from facerank.reindex import BATCH, embed_crops
from facerank.storage import ObjectStore

log = logging.getLogger(__name__)

PREFIX = "unknown/"
FACES = f"{PREFIX}faces/"
GROUPS = f"{PREFIX}groups.json"
FORMAT = "facerank.unknown.groups/v1"
T = TypeVar("T")
MERGE_FACTOR = 0.75
"""Groups merge when their centres are this much closer than a face must be to join: a centre
averages away the noise of single faces, so two centres of one person lie much closer than two
of their faces, while merging at the joining distance put two of AT&T's strangers together."""
UPDATE_ATTEMPTS = 20
"""Conditional-put rounds before giving up (a retryable error: the event is redelivered)."""


class UnknownGroupNotFoundError(FacerankError):
    code = "unknown_group_not_found"


class UnknownContendedError(FacerankError):
    """Too many concurrent writers of the groups document; the event will be retried."""

    code = "unknown_contended"
    retryable = True


@dataclass(frozen=True)
class UnknownFace:
    """One kept face: where it was seen, and the group it belongs to."""

    face_id: str
    bucket: str
    key: str
    etag: str
    box: tuple[int, int, int, int]
    group: str = ""
    model_versions: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "bucket": self.bucket,
            "key": self.key,
            "etag": self.etag,
            "box": list(self.box),
            "group": self.group,
            "model_versions": list(self.model_versions),
        }

    @classmethod
    def from_json(cls, face_id: str, data: Mapping[str, Any]) -> UnknownFace:
        x, y, w, h = (int(v) for v in data["box"])
        return cls(
            face_id,
            str(data["bucket"]),
            str(data["key"]),
            str(data["etag"]),
            (x, y, w, h),
            str(data["group"]),
            tuple(data.get("model_versions", ())),
        )


@dataclass(frozen=True)
class NewFace:
    """A face to keep: its description, crop and embeddings by every served version."""

    face: UnknownFace
    crop: np.ndarray
    vectors: Mapping[str, np.ndarray]


@dataclass
class Groups:
    """The groups document: faces by id, the version groups are computed with, the counter."""

    model_version: str = ""
    faces: dict[str, UnknownFace] = field(default_factory=dict)
    next_group: int = 1

    def members(self) -> dict[str, list[UnknownFace]]:
        """Group id -> its faces, groups in creation order, faces in id order."""
        groups: dict[str, list[UnknownFace]] = {}
        for face in sorted(self.faces.values(), key=lambda f: (_group_number(f.group), f.face_id)):
            groups.setdefault(face.group, []).append(face)
        return groups

    def new_group(self) -> str:
        group = f"g{self.next_group}"
        self.next_group += 1
        return group

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "model_version": self.model_version,
            "next_group": self.next_group,
            "faces": {fid: f.to_json() for fid, f in sorted(self.faces.items())},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Groups:
        if data.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} document")
        return cls(
            str(data.get("model_version", "")),
            {fid: UnknownFace.from_json(fid, f) for fid, f in data.get("faces", {}).items()},
            int(data.get("next_group", 1)),
        )


def _group_number(group: str) -> int:
    return int(group[1:]) if group[1:].isdigit() else 0


class UnknownFaces:
    """Unknown faces of one gallery bucket, and their groups."""

    def __init__(self, store: ObjectStore, bucket: str) -> None:
        self.store = store
        self.bucket = bucket
        self._vectors: dict[tuple[str, str], np.ndarray] = {}
        """Embeddings read or written, by (face, version): immutable, so safe to keep."""

    # --- reading ----------------------------------------------------------------------------

    def groups(self) -> Groups:
        return self._read()[0]

    def crop(self, face: str) -> np.ndarray:
        return crop_from_png(self.store.get(self.bucket, f"{FACES}{face}/crop.png").data)

    def vector(self, face: str, version: str) -> np.ndarray:
        cached = self._vectors.get((face, version))
        if cached is None:
            data = self.store.get(self.bucket, f"{FACES}{face}/{version}.f32").data
            cached = self._vectors[(face, version)] = vector_from_bytes(data)
        return cached

    # --- changing ---------------------------------------------------------------------------

    def add(
        self,
        new: Sequence[NewFace],
        *,
        embedders: Mapping[str, Embedder],
        active: str,
        threshold: float,
    ) -> dict[str, str]:
        """Keep ``new`` faces and group them; ``face_id -> group``. Faces already kept (a
        redelivery) keep their group; faces of older versions of the same photos go.
        ``new`` faces hold vectors by every version in ``embedders`` (the served ones)."""
        for item in new:
            self._write_face(item)
        sources = {(n.face.bucket, n.face.key): n.face.etag for n in new}

        def change(groups: Groups) -> list[str]:
            stale = [
                f.face_id
                for f in groups.faces.values()
                if sources.get((f.bucket, f.key), f.etag) != f.etag
            ]
            version = groups.model_version if groups.model_version in embedders else active
            self._follow(groups, embedders, version, threshold)
            self._drop(groups, stale, version, threshold)
            for item in new:
                if item.face.face_id not in groups.faces:
                    self._join(groups, item.face, version, threshold)
            return stale

        groups, stale = self._update(change)
        self._delete_objects(stale)
        return {n.face.face_id: groups.faces[n.face.face_id].group for n in new}

    def remove_source(self, bucket: str, key: str, *, threshold: float) -> list[str]:
        """Forget the faces of one photo (deleted); their groups re-split. Their ids."""

        def change(groups: Groups) -> list[str]:
            gone = [f.face_id for f in groups.faces.values() if (f.bucket, f.key) == (bucket, key)]
            self._drop(groups, gone, groups.model_version, threshold)
            return gone

        _, gone = self._update(change)
        self._delete_objects(gone)
        return gone

    def remove_group(self, group: str) -> list[UnknownFace]:
        """Forget a group (it was named); its faces, raising when there is no such group."""

        def change(groups: Groups) -> list[UnknownFace]:
            members = [f for f in groups.faces.values() if f.group == group]
            if not members:
                raise UnknownGroupNotFoundError(f"no unknown group {group!r}")
            for face in members:
                del groups.faces[face.face_id]
            return members

        _, members = self._update(change)
        self._delete_objects(f.face_id for f in members)
        return members

    # --- grouping ---------------------------------------------------------------------------

    def _join(self, groups: Groups, face: UnknownFace, version: str, threshold: float) -> None:
        """Join the group whose centre ``face`` is nearest (within ``threshold``), or start
        one; then merge the groups whose centres came within ``threshold`` of it."""
        members = groups.members()
        names = list(members)
        centres = [self._centre([f.face_id for f in members[g]], version) for g in names]
        vector = self.vector(face.face_id, version)
        target = nearest(vector, centres, threshold)
        group = names[target] if target is not None else groups.new_group()
        groups.faces[face.face_id] = replace(face, group=group)
        while True:
            mine = [f.face_id for f in groups.faces.values() if f.group == group]
            others = {g: m for g, m in groups.members().items() if g != group}
            names = sorted(others, key=_group_number)
            centres = [self._centre([f.face_id for f in others[g]], version) for g in names]
            close = nearest(self._centre(mine, version), centres, MERGE_FACTOR * threshold)
            if close is None:
                return
            keep, gone = sorted((group, names[close]), key=_group_number)
            for fid, other in list(groups.faces.items()):
                if other.group == gone:
                    groups.faces[fid] = replace(other, group=keep)
            group = keep

    def _drop(self, groups: Groups, faces: Iterable[str], version: str, threshold: float) -> None:
        """Remove ``faces`` and split the groups they leave into their still-linked parts."""
        touched = {groups.faces[f].group for f in faces if f in groups.faces}
        for face in faces:
            groups.faces.pop(face, None)
        for group in sorted(touched, key=_group_number):
            members = [f for f in groups.faces.values() if f.group == group]
            parts = self._components([f.face_id for f in members], version, threshold)
            for part in parts[1:]:
                fresh = groups.new_group()
                for fid in part:
                    groups.faces[fid] = replace(groups.faces[fid], group=fresh)

    def follow(self, embedder: Embedder, threshold: float) -> int:
        """Embed every face with ``embedder``'s version and regroup them with it, at
        ``threshold``; the number of faces. The model switch calls this (see the module).

        The embedding, the costly part, runs before the conditional update, so concurrent
        writers are not held off for it (vectors are immutable objects: an interrupted run
        loses nothing); faces kept meanwhile are embedded inside the update.
        """
        version = embedder.model_version
        mine = {version: embedder}
        self._embed_missing(self.groups(), mine, version)
        groups, _ = self._update(lambda fresh: self._follow(fresh, mine, version, threshold))
        log.info("unknown faces follow %s: %d face(s) regrouped", version, len(groups.faces))
        return len(groups.faces)

    def _follow(
        self, groups: Groups, embedders: Mapping[str, Embedder], version: str, threshold: float
    ) -> None:
        """Regroup every face with ``version`` when the groups were computed with another
        one, embedding (from their crops) the faces that lack it."""
        if groups.model_version == version:
            return
        self._embed_missing(groups, embedders, version)
        ids = sorted(groups.faces, key=lambda f: (_group_number(groups.faces[f].group), f))
        for fid in ids:
            groups.faces[fid] = replace(groups.faces[fid], group="")
        for part in self._components(ids, version, threshold):
            group = groups.new_group()
            for fid in part:
                groups.faces[fid] = replace(groups.faces[fid], group=group)
        groups.model_version = version

    def _embed_missing(
        self, groups: Groups, embedders: Mapping[str, Embedder], version: str
    ) -> None:
        """Give every face of ``groups`` an embedding by ``version``, :data:`BATCH` crops per
        call, skipping those this object wrote already. A face whose crop is gone was being
        removed: it is dropped (if the document was stale, its conditional put fails and the
        change is redone on a fresh read)."""
        missing = [
            fid
            for fid, face in groups.faces.items()
            if version not in face.model_versions and (fid, version) not in self._vectors
        ]
        for start in range(0, len(missing), BATCH):
            crops = {}
            for fid in missing[start : start + BATCH]:
                try:
                    crops[fid] = self.crop(fid)
                except ObjectNotFoundError:
                    del groups.faces[fid]
            if crops:
                vectors = embed_crops(embedders[version], list(crops.values()))
                for fid, vector in zip(crops, vectors, strict=True):
                    self._put_vector(fid, version, vector)
        for fid, face in groups.faces.items():
            if version not in face.model_versions:
                groups.faces[fid] = replace(face, model_versions=(*face.model_versions, version))

    def _components(self, faces: list[str], version: str, threshold: float) -> list[list[str]]:
        """``faces`` grouped afresh, as if they had arrived one by one in this order."""
        scratch = Groups(model_version=version)
        for fid in faces:
            self._join(scratch, UnknownFace(fid, "", "", "", (0, 0, 0, 0)), version, threshold)
        return [[f.face_id for f in part] for part in scratch.members().values()]

    def _centre(self, faces: list[str], version: str) -> np.ndarray:
        mean = np.mean([self.vector(f, version) for f in faces], axis=0)
        return mean / max(float(np.linalg.norm(mean)), 1e-12)

    # --- storage ----------------------------------------------------------------------------

    def _write_face(self, item: NewFace) -> None:
        fid = item.face.face_id
        self.store.put(
            self.bucket, f"{FACES}{fid}/crop.png", crop_png(item.crop), content_type="image/png"
        )
        for version, vector in item.vectors.items():
            self._put_vector(fid, version, vector)

    def _put_vector(self, face: str, version: str, vector: np.ndarray) -> None:
        self.store.put(self.bucket, f"{FACES}{face}/{version}.f32", vector_bytes(vector))
        self._vectors[(face, version)] = np.asarray(vector, dtype=np.float32)

    def _delete_objects(self, faces: Iterable[str]) -> None:
        for face in faces:
            for info in list(self.store.list(self.bucket, f"{FACES}{face}/")):
                self.store.delete(self.bucket, info.key)
            self._vectors = {k: v for k, v in self._vectors.items() if k[0] != face}

    def _read(self) -> tuple[Groups, str | None]:
        try:
            stored = self.store.get(self.bucket, GROUPS)
        except ObjectNotFoundError:
            return Groups(), None
        return Groups.from_json(json.loads(stored.data)), stored.info.etag

    def _update(self, change: Callable[[Groups], T]) -> tuple[Groups, T]:
        """Read, change, put conditionally; again from a fresh read when someone else won."""
        for _ in range(UPDATE_ATTEMPTS):
            groups, etag = self._read()
            outcome = change(groups)
            body = json.dumps(groups.to_json(), indent=1).encode()
            try:
                self.store.put(
                    self.bucket,
                    GROUPS,
                    body,
                    content_type="application/json",
                    if_match=etag,
                    if_none_match=etag is None,
                )
            except PreconditionFailedError:
                continue
            return groups, outcome
        raise UnknownContendedError("the unknown faces' groups kept changing under this update")


SAMPLES = 3
"""Sample faces listed per group: enough to recognise someone, few enough to scan."""


def listing(unknown: UnknownFaces) -> dict[str, Any]:
    """Groups, largest first, with sizes and sample faces (``facerank unknown ls --json``
    and the web page show this)."""
    groups = unknown.groups()
    entries = [
        {
            "group": group,
            "faces": len(members),
            "photos": len({(f.bucket, f.key) for f in members}),
            "samples": [
                {"face_id": f.face_id, "bucket": f.bucket, "key": f.key, "box": list(f.box)}
                for f in members[:SAMPLES]
            ],
        }
        for group, members in groups.members().items()
    ]
    entries.sort(key=lambda e: -e["faces"])
    return {"model_version": groups.model_version, "groups": entries}


def nearest(vector: np.ndarray, centres: Sequence[np.ndarray], threshold: float) -> int | None:
    """Index of the centre nearest ``vector`` if within ``threshold`` (Euclidean distance of
    unit vectors, as the search computes), else None; ties go to the first."""
    if not centres:
        return None
    distances = np.sqrt(np.clip(2.0 - 2.0 * (np.stack(centres) @ vector), 0.0, 4.0))
    best = int(np.argmin(distances))
    return best if distances[best] <= threshold else None
