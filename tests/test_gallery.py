"""The gallery on both store backends: commit records, idempotence, removal, concurrency."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from facerank.errors import InvalidIdentityError, StoreUnavailableError
from facerank.faces.align import ARCFACE_CHIP_112, GALLERY_CROP_256, rechip
from facerank.gallery import (
    EnrolledFace,
    Gallery,
    SourceRecord,
    face_id,
    identity_from_key,
    normalise_identity,
)
from facerank.storage import ObjectStore

VERSION = "lbp-v0"


def make_record(key: str, etag: str = "e1", faces: int = 1) -> SourceRecord:
    return SourceRecord(
        identity=identity_from_key(key),
        bucket="faces",
        key=key,
        etag=etag,
        faces_seen=faces,
        enrolled_at=datetime.now(UTC),
        faces=tuple(
            EnrolledFace(face_id("faces", key, etag, i), (10, 10, 50, 50), 0.99, "eyes")
            for i in range(faces)
        ),
    )


def enroll(
    gallery: Gallery, key: str, etag: str = "e1", faces: int = 1, seed: int = 0
) -> SourceRecord:
    rng = np.random.default_rng(seed)
    crops = [rng.integers(0, 256, (256, 256, 3), dtype=np.uint8) for _ in range(faces)]
    vectors = rng.normal(size=(faces, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return gallery.enroll(make_record(key, etag, faces), crops, {VERSION: vectors})


@pytest.fixture
def gallery(store: ObjectStore) -> Gallery:
    gallery = Gallery(store, "gallery")
    gallery.ensure()
    return gallery


def all_keys(gallery: Gallery) -> list[str]:
    return [info.key for info in gallery.store.list(gallery.bucket)]


def test_enroll_then_read_back(gallery: Gallery) -> None:
    record = enroll(gallery, "alice/1.jpg", faces=2)
    assert record.model_versions == (VERSION,)
    assert gallery.record("faces", "alice/1.jpg") == record
    assert gallery.identities() == {"alice": 2}
    assert gallery.sources() == {("faces", "alice/1.jpg"): "e1"}
    matrix = gallery.matrix(VERSION)
    assert matrix.face_ids == [f.face_id for f in record.faces]
    assert matrix.identities == ["alice", "alice"]
    assert matrix.vectors.shape == (2, 8)
    assert gallery.matrix("other-model").vectors.shape[0] == 0
    assert gallery.crop(record.faces[0].face_id).shape == (256, 256, 3)


def test_a_face_record_names_its_detector_and_older_ones_read_as_haar() -> None:
    face = EnrolledFace("id-0", (1, 2, 30, 40), 0.97, "landmarks", detector="ssd")
    data = face.to_json()
    assert data["detector"] == "ssd"
    assert EnrolledFace.from_json(data) == face
    del data["detector"]  # written before detectors were named: Haar was the only one
    assert EnrolledFace.from_json(data).detector == "haar"


def test_same_enrollment_twice_leaves_one_entry(gallery: Gallery) -> None:
    enroll(gallery, "alice/1.jpg")
    before = all_keys(gallery)
    enroll(gallery, "alice/1.jpg")
    assert all_keys(gallery) == before
    assert gallery.identities() == {"alice": 1}


def test_new_version_of_a_photo_replaces_its_faces(gallery: Gallery) -> None:
    old = enroll(gallery, "alice/1.jpg", etag="e1")
    new = enroll(gallery, "alice/1.jpg", etag="e2")
    assert gallery.face_keys(old.faces[0].face_id) == []
    assert gallery.sources() == {("faces", "alice/1.jpg"): "e2"}
    assert gallery.matrix(VERSION).face_ids == [new.faces[0].face_id]


def test_remove_source_leaves_no_trace(gallery: Gallery) -> None:
    enroll(gallery, "alice/1.jpg", faces=2)
    kept = enroll(gallery, "bob/1.jpg")
    removed = gallery.remove_source("faces", "alice/1.jpg")
    assert removed is not None
    assert all(
        "alice" not in key and removed.faces[0].face_id not in key for key in all_keys(gallery)
    )
    assert gallery.identities() == {"bob": 1}
    assert gallery.remove_source("faces", "alice/1.jpg") is None  # idempotent
    assert gallery.matrix(VERSION).face_ids == [kept.faces[0].face_id]


def test_remove_identity(gallery: Gallery) -> None:
    enroll(gallery, "alice/1.jpg")
    enroll(gallery, "alice/2.jpg")
    enroll(gallery, "bob/1.jpg")
    assert len(gallery.remove_identity("alice")) == 2
    assert gallery.identities() == {"bob": 1}


def test_concurrent_enrollments_lose_nothing(gallery: Gallery) -> None:
    keys = [f"person{i % 4}/{i}.jpg" for i in range(20)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda ik: enroll(gallery, ik[1], seed=ik[0]), enumerate(keys)))
    assert sum(gallery.identities().values()) == 20
    assert len(gallery.matrix(VERSION).face_ids) == 20


def test_faces_without_a_record_are_invisible_then_collected(gallery: Gallery) -> None:
    """A crash between the face writes and the record write leaves nothing a reader sees."""
    record = make_record("alice/1.jpg")
    crop = np.zeros((256, 256, 3), np.uint8)
    gallery._put_crop(record.faces[0].face_id, crop)  # simulating the crash
    gallery._put_embedding(record.faces[0].face_id, VERSION, np.ones(8, np.float32))
    assert gallery.identities() == {}
    assert gallery.matrix(VERSION).face_ids == []
    assert gallery.collect_orphans() == 0  # too young: an enrollment may still be committing
    later = datetime.now(UTC) + timedelta(hours=1)
    assert gallery.collect_orphans(now=later) == 2
    assert all_keys(gallery) == []


class FailingCropStore:
    """The store, except that putting one face's crop fails (an outage mid-enrollment)."""

    def __init__(self, inner: ObjectStore, face: str) -> None:
        self.inner = inner
        self.face = face

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def put(self, bucket: str, key: str, data: bytes, **options: object) -> object:
        if key == f"faces/{self.face}/crop.png":
            raise StoreUnavailableError("injected outage")
        return self.inner.put(bucket, key, data, **options)


def test_a_failed_face_write_stops_the_enrollment_before_its_record(gallery: Gallery) -> None:
    """Face objects are written together; the record waits for all of them, and the failure
    is raised only once the others have ended (none is left writing behind the caller)."""
    record = make_record("alice/1.jpg", faces=2)
    failing = Gallery(FailingCropStore(gallery.store, record.faces[1].face_id), "gallery")
    crops = [np.zeros((256, 256, 3), np.uint8)] * 2
    vectors = np.eye(2, 8, dtype=np.float32)
    with pytest.raises(StoreUnavailableError):
        failing.enroll(record, crops, {VERSION: vectors})
    assert gallery.identities() == {}
    assert gallery.index(VERSION).face_ids() == set()
    first = record.faces[0].face_id
    assert sorted(gallery.face_keys(first)) == [
        f"faces/{first}/crop.png",
        f"faces/{first}/{VERSION}.f32",
    ]


def test_enroll_refuses_mismatched_inputs(gallery: Gallery) -> None:
    with pytest.raises(ValueError, match="same faces"):
        gallery.enroll(make_record("alice/1.jpg", faces=2), [], {VERSION: np.zeros((0, 8))})


@pytest.mark.parametrize(
    ("name", "canonical"),
    [
        ("alice", "alice"),
        ("  Zoe\u0308  ", "Zoë"),
        ("Mary  Ann", "Mary Ann"),
        ("O'Brien", "O'Brien"),
        ("李雷", "李雷"),
        ("Dmitri Иванов", "Dmitri Иванов"),  # one script per word is a name, not a look-alike
    ],
)
def test_identity_names_are_normalised(name: str, canonical: str) -> None:
    assert normalise_identity(name) == canonical


@pytest.mark.parametrize(
    "key",
    [
        "photo.jpg",
        "../x/1.jpg",
        ".hidden/1.jpg",
        "a\x00b/1.jpg",
        "a\u202eb/1.jpg",
        "x" * 65 + "/1.jpg",
        " /1.jpg",
        "alice/",
        "\u0430lice/1.jpg",  # Cyrillic a in a Latin word: a look-alike of alice
    ],
)
def test_keys_without_a_usable_identity_are_refused(key: str) -> None:
    with pytest.raises(InvalidIdentityError):
        identity_from_key(key)


def test_stored_crop_can_be_rechipped_for_another_embedder() -> None:
    crop = np.zeros((256, 256, 3), np.uint8)
    crop[100:124, 84:108] = 255  # a bright left eye at its canonical place (96, 112)
    chip = rechip(crop, GALLERY_CROP_256, ARCFACE_CHIP_112)
    assert chip.shape == (112, 112, 3)
    x, y = ARCFACE_CHIP_112.left_eye
    assert chip[round(y), round(x)].min() == 255
