"""Unknown faces: kept, grouped around centres, merged, split, regrouped after a model switch,
named into the faces bucket; identities renamed or merged by moving photos.

Grouping is checked with hand-placed unit vectors (so each distance is known), the model switch
with the real lbp-v0 embedder over real crops, storage with the real folder store.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2
import numpy as np
import pytest

from facerank.embedding import Embedder
from facerank.embedding.lbp import LbpEmbedder
from facerank.errors import InvalidIdentityError
from facerank.faces.align import GALLERY_CROP_256
from facerank.gallery import Gallery
from facerank.identities import IdentityNotFoundError, move_identity, name_group
from facerank.storage import FolderStore
from facerank.unknown import NewFace, UnknownFace, UnknownFaces, UnknownGroupNotFoundError

THRESHOLD = 0.5
BLANK = np.zeros((GALLERY_CROP_256.size, GALLERY_CROP_256.size, 3), np.uint8)


def unit(angle_degrees: float) -> np.ndarray:
    """A unit vector in a plane: distance between two is 2 sin(half the angle between)."""
    angle = np.radians(angle_degrees)
    vector = np.zeros(8, np.float32)
    vector[:2] = np.cos(angle), np.sin(angle)
    return vector


def new_face(face_id: str, angle: float, key: str = "", etag: str = "e") -> NewFace:
    face = UnknownFace(face_id, "queries", key or f"{face_id}.jpg", etag, (0, 0, 10, 10))
    return NewFace(face, BLANK, {"v1": unit(angle)})


@pytest.fixture
def store(tmp_path: Path) -> FolderStore:
    store = FolderStore(tmp_path / "buckets")
    for bucket in ("gallery", "faces", "queries"):
        store.ensure_bucket(bucket)
    return store


@pytest.fixture
def unknown(store: FolderStore) -> UnknownFaces:
    return UnknownFaces(store, "gallery")


EMBEDDERS: dict[str, Embedder] = {}
"""Version v1 is given as vectors: no face is ever re-embedded with it."""


def add(unknown: UnknownFaces, *faces: NewFace) -> dict[str, str]:
    return unknown.add(list(faces), embedders=EMBEDDERS, active="v1", threshold=THRESHOLD)


def groups_of(unknown: UnknownFaces) -> list[list[str]]:
    return sorted(sorted(f.face_id for f in m) for m in unknown.groups().members().values())


# Distance 2 sin(angle / 2): 20° apart is 0.35 (joins at 0.5), 30° is 0.52 and 40° 0.68 (not);
# centres merge within 0.75 x 0.5 = 0.375, i.e. 21.6°.


def test_a_face_joins_the_group_it_matches_or_starts_one(unknown: UnknownFaces) -> None:
    assert add(unknown, new_face("a", 0)) == {"a": "g1"}
    assert add(unknown, new_face("b", 20)) == {"b": "g1"}  # 0.35 from a
    assert add(unknown, new_face("c", 120)) == {"c": "g2"}
    assert groups_of(unknown) == [["a", "b"], ["c"]]


def test_a_look_alike_of_one_member_does_not_chain_two_people(unknown: UnknownFaces) -> None:
    add(unknown, new_face("a", 0), new_face("b", 20))  # one person: centre at 10°
    assert add(unknown, new_face("c", 40)) == {"c": "g2"}  # 0.35 from b, 0.52 from the centre
    assert groups_of(unknown) == [["a", "b"], ["c"]]


def test_groups_whose_centres_come_close_merge_into_the_oldest(unknown: UnknownFaces) -> None:
    add(unknown, new_face("a", 0), new_face("c", 30))
    assert groups_of(unknown) == [["a"], ["c"]]
    assert add(unknown, new_face("b1", 15, key="b.jpg")) == {"b1": "g1"}  # a tie: the oldest
    assert groups_of(unknown) == [["a", "b1"], ["c"]]  # centres 22.5° apart: 0.39 > 0.375
    # b2 joins c (0.14 from it); the centres, now 18.5° apart (0.32), merge.
    assert add(unknown, new_face("b2", 22, key="b.jpg")) == {"b2": "g1"}
    assert groups_of(unknown) == [["a", "b1", "b2", "c"]]
    assert {f.group for f in unknown.groups().faces.values()} == {"g1"}


def test_removing_the_faces_that_joined_them_splits_the_group_again(
    unknown: UnknownFaces,
) -> None:
    add(unknown, new_face("a", 0), new_face("c", 30))
    add(unknown, new_face("b1", 15, key="b.jpg"))
    add(unknown, new_face("b2", 22, key="b.jpg"))
    assert sorted(unknown.remove_source("queries", "b.jpg", threshold=THRESHOLD)) == ["b1", "b2"]
    assert groups_of(unknown) == [["a"], ["c"]]
    assert not list(unknown.store.list("gallery", "unknown/faces/b1/"))


def test_a_redelivery_adds_nothing_and_a_new_photo_version_replaces_the_old(
    unknown: UnknownFaces,
) -> None:
    add(unknown, new_face("a", 0, key="p.jpg", etag="1"))
    add(unknown, new_face("a", 0, key="p.jpg", etag="1"))
    assert groups_of(unknown) == [["a"]]
    add(unknown, new_face("a2", 90, key="p.jpg", etag="2"))
    assert groups_of(unknown) == [["a2"]]
    assert not list(unknown.store.list("gallery", "unknown/faces/a/"))


def test_concurrent_additions_lose_no_face(unknown: UnknownFaces, store: FolderStore) -> None:
    """Each thread its own UnknownFaces (as separate pods would be): conditional puts only."""
    faces = [new_face(f"f{i}", float(i)) for i in range(16)]
    threads = [
        threading.Thread(target=add, args=(UnknownFaces(store, "gallery"), face)) for face in faces
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(unknown.groups().faces) == sorted(f.face.face_id for f in faces)
    assert len(unknown.groups().members()) == 1  # all within 15°: one person


def test_a_model_switch_reembeds_from_crops_and_regroups(
    unknown: UnknownFaces, astronaut: np.ndarray, lfw_faces: np.ndarray
) -> None:
    lbp = LbpEmbedder()
    crops = {
        "eileen-1": astronaut_crop(astronaut, 0),
        "eileen-2": astronaut_crop(astronaut, 4),
        "other": lfw_crop(lfw_faces, 3),
    }
    # Under v1 (given vectors) all three sit apart.
    for i, (fid, crop) in enumerate(crops.items()):
        face = UnknownFace(fid, "queries", f"{fid}.jpg", "e", (0, 0, 1, 1), model_versions=("v1",))
        add(unknown, NewFace(face, crop, {"v1": unit(60.0 * i)}))
    assert len(unknown.groups().members()) == 3
    threshold = lbp.match_threshold
    unknown.add(
        [], embedders={lbp.model_version: lbp}, active=lbp.model_version, threshold=threshold
    )
    groups = unknown.groups()
    assert groups.model_version == lbp.model_version
    assert all(lbp.model_version in f.model_versions for f in groups.faces.values())
    assert unknown.store.exists("gallery", f"unknown/faces/other/{lbp.model_version}.f32")
    assert groups.faces["eileen-1"].group == groups.faces["eileen-2"].group
    assert groups.faces["other"].group != groups.faces["eileen-1"].group


def test_the_gallery_index_repair_and_orphan_sweep_leave_unknown_faces_alone(
    unknown: UnknownFaces, store: FolderStore
) -> None:
    """Unknown faces share the gallery bucket; they are neither records nor enrolled faces."""
    add(unknown, new_face("a", 0.0), new_face("b", 90.0))
    keys = sorted(info.key for info in store.list("gallery"))
    gallery = Gallery(store, "gallery")
    assert gallery.repair_indexes() == {}
    assert gallery.index_versions() == []
    later = datetime.now(UTC) + timedelta(days=1)
    assert gallery.collect_orphans(now=later) == 0
    assert sorted(info.key for info in store.list("gallery")) == keys
    assert groups_of(unknown) == [["a"], ["b"]]


def astronaut_crop(astronaut: np.ndarray, shift: int) -> np.ndarray:
    x, y, w, h = 150, 40, 150, 150
    return cv2.resize(astronaut[y + shift : y + h + shift, x : x + w], (256, 256))


def lfw_crop(lfw_faces: np.ndarray, index: int) -> np.ndarray:
    return np.repeat(cv2.resize(lfw_faces[index], (256, 256))[..., None], 3, axis=2)


# --- naming and renaming ------------------------------------------------------------------


def test_naming_a_group_copies_its_photos_into_the_faces_bucket_and_forgets_it(
    unknown: UnknownFaces, store: FolderStore
) -> None:
    for key in ("party/1.jpg", "party/2.jpg"):
        store.put("queries", key, key.encode())
    add(unknown, new_face("a", 0, key="party/1.jpg"), new_face("b", 10, key="party/2.jpg"))
    add(unknown, new_face("c", 100, key="party/2.jpg"))  # another person in photo 2
    written = name_group(store, "faces", unknown, "g1", "  Zoë   Li ")
    assert written == ["Zoë Li/named/party/1.jpg", "Zoë Li/named/party/2.jpg"]
    assert store.get("faces", "Zoë Li/named/party/1.jpg").data == b"party/1.jpg"
    assert groups_of(unknown) == [["c"]]
    with pytest.raises(UnknownGroupNotFoundError):
        name_group(store, "faces", unknown, "g1", "again")
    with pytest.raises(InvalidIdentityError):
        name_group(store, "faces", unknown, "g2", "../etc")
    assert groups_of(unknown) == [["c"]]


def test_moving_an_identity_renames_or_merges_leaving_no_old_key(store: FolderStore) -> None:
    store.put("faces", "alice/1.jpg", b"one")
    store.put("faces", "alice/trip/2.jpg", b"two")
    store.put("faces", "bob/1.jpg", b"bob's")
    assert move_identity(store, "faces", "alice", "carol") == ["carol/1.jpg", "carol/trip/2.jpg"]
    # A merge where a name is taken by another photo: the content hash, never the old name.
    moved = move_identity(store, "faces", "carol", "bob")
    assert moved[1] == "bob/trip/2.jpg"
    assert moved[0].startswith("bob/1-")
    assert moved[0].endswith(".jpg")
    keys = sorted(info.key for info in store.list("faces"))
    assert keys == sorted(["bob/1.jpg", moved[0], "bob/trip/2.jpg"])
    assert store.get("faces", "bob/1.jpg").data == b"bob's"
    with pytest.raises(IdentityNotFoundError):
        move_identity(store, "faces", "alice", "dave")
    with pytest.raises(InvalidIdentityError):
        move_identity(store, "faces", "bob", " bob ")
