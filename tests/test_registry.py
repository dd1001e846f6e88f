"""The model pointer, re-embedding and enrollment during a switch, on the real stores.

The second model is ``lbp-v0`` projected by a fixed random matrix: a real embedder of another
version and dimension, so every check of "which version embedded this" can fail.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from facerank.embedding import Embedder, LbpEmbedder, l2_normalize
from facerank.errors import FacerankError, PreconditionFailedError
from facerank.faces.align import ChipSpec
from facerank.gallery import Gallery
from facerank.registry import (
    ActivePointer,
    ModelRef,
    ModelRegistry,
    ServingModels,
    SwitchInProgressError,
    load_model,
    switch_model,
)
from facerank.registry.registry import POINTER_KEY
from facerank.reindex import add_version, embed_crops, reindex
from facerank.settings import Settings
from facerank.storage import ObjectStore
from facerank.unknown import Groups, NewFace, UnknownFace, UnknownFaces
from tests.plugins.enroller import Enroller, lfw_photo
from tests.test_unknown import astronaut_crop, lfw_crop

NEW = "lbp-proj-v1"


class ProjectedLbp:
    """``lbp-v0`` projected to 32-D by a seeded Gaussian matrix: another model version."""

    def __init__(self) -> None:
        self._lbp = LbpEmbedder()
        rng = np.random.default_rng(3)
        self._projection = rng.standard_normal((self._lbp.dim, 32), dtype=np.float32)

    @property
    def model_version(self) -> str:
        return NEW

    @property
    def chip(self) -> ChipSpec:
        return self._lbp.chip

    @property
    def dim(self) -> int:
        return 32

    @property
    def match_threshold(self) -> float:
        return 0.5

    def embed(self, chips: np.ndarray) -> np.ndarray:
        return l2_normalize(self._lbp.embed(chips) @ self._projection)


def loader(ref: ModelRef, settings: Settings) -> Embedder:
    return ProjectedLbp() if ref.version == NEW else load_model(ref, settings)


@pytest.fixture
def registry(store: ObjectStore) -> ModelRegistry:
    registry = ModelRegistry(store, "models")
    registry.ensure()
    return registry


@pytest.fixture
def enroller(tmp_path: Path) -> Enroller:
    enroller = Enroller(Settings(data_dir=tmp_path, model="lbp-v0"))
    enroller.handler.models = ServingModels(
        enroller.handler.models.registry, enroller.handler.settings, load=loader
    )
    return enroller


def records(gallery: Gallery) -> dict[str, tuple[str, ...]]:
    return {r.key: r.model_versions for r in gallery.records()}


# --- the pointer ---------------------------------------------------------------------------


def test_pointer_round_trips_and_refuses_what_is_not_one() -> None:
    pointer = ActivePointer(ModelRef("lbp-v0")).activated(ModelRef("lbp-v0"), "bootstrap")
    pending = pointer.with_pending(ModelRef("m-2", Path("/models/m-2")))
    assert ActivePointer.from_json(json.loads(json.dumps(pending.to_json()))) == pending
    for bad in ({}, {"format": "x"}, {**pending.to_json(), "active": {"version": "../x"}}):
        with pytest.raises(ValueError, match="pointer"):
            ActivePointer.from_json(bad)


def test_concurrent_bootstraps_agree_on_one_pointer(registry: ModelRegistry) -> None:
    defaults = [ModelRef(f"m-{i}") for i in range(8)]
    with ThreadPoolExecutor(8) as pool:
        pointers = list(pool.map(registry.bootstrap, defaults))
    assert len({p.active for p in pointers}) == 1
    assert registry.pointer() == pointers[0]


def test_switch_steps_are_checked(registry: ModelRegistry) -> None:
    registry.bootstrap(ModelRef("lbp-v0"))
    with pytest.raises(SwitchInProgressError):
        registry.complete_switch("m-2", "not pending")
    registry.begin_switch(ModelRef("m-2"))
    assert registry.begin_switch(ModelRef("m-2")).pending == ModelRef("m-2")  # idempotent
    with pytest.raises(SwitchInProgressError):
        registry.begin_switch(ModelRef("m-3"))
    done = registry.complete_switch("m-2", "better")
    assert (done.active.version, done.pending) == ("m-2", None)
    assert [(s.version, s.reason) for s in done.history] == [
        ("lbp-v0", "bootstrap"),
        ("m-2", "better"),
    ]


def test_a_lost_race_on_the_pointer_is_retried_not_overwritten(
    registry: ModelRegistry, store: ObjectStore
) -> None:
    registry.bootstrap(ModelRef("lbp-v0"))
    stale = store.get("models", POINTER_KEY).info.etag
    registry.begin_switch(ModelRef("m-2"))
    with pytest.raises(PreconditionFailedError):
        store.put("models", POINTER_KEY, b"{}", if_match=stale)
    assert registry.pointer().pending == ModelRef("m-2")


def test_unreadable_pointer_stops_everything(registry: ModelRegistry, store: ObjectStore) -> None:
    store.put("models", POINTER_KEY, b"not json")
    with pytest.raises(FacerankError, match="unreadable"):
        registry.bootstrap(ModelRef("lbp-v0"))


# --- re-embedding and enrollment during a switch -------------------------------------------


def enroll_some(enroller: Enroller, lfw_faces: np.ndarray, count: int) -> None:
    for i in range(count):
        enroller.add(f"person-{i}/1.jpg", lfw_photo(lfw_faces, i))


def test_reindex_adds_the_version_to_every_record_once(
    enroller: Enroller, lfw_faces: np.ndarray
) -> None:
    enroll_some(enroller, lfw_faces, 3)
    gallery = enroller.handler.gallery

    first = reindex(gallery, ProjectedLbp())
    again = reindex(gallery, ProjectedLbp())

    assert (first.records, first.embedded, again.embedded) == (3, 3, 0)
    assert set(records(gallery).values()) == {("lbp-proj-v1", "lbp-v0")}
    for record in gallery.records():
        stored = gallery.embedding(record.faces[0].face_id, NEW)
        assert stored.shape == (32,)
        assert np.isclose(np.linalg.norm(stored), 1.0)


def test_reembedding_never_reverts_a_concurrent_reenrollment(
    enroller: Enroller, lfw_faces: np.ndarray
) -> None:
    enroller.add("alice/1.jpg", lfw_photo(lfw_faces, 0))
    gallery = enroller.handler.gallery
    [key] = gallery.record_versions()
    read_before = gallery.read_record(key)
    enroller.add("alice/1.jpg", lfw_photo(lfw_faces, 1))  # the photo is replaced meanwhile

    assert read_before is not None
    assert not add_version(gallery, read_before, ProjectedLbp())
    [record] = gallery.records()
    assert record.etag != read_before.record.etag  # the new photo's record survived
    assert NEW not in record.model_versions


def test_enrollment_while_pending_embeds_with_both_versions(
    enroller: Enroller, lfw_faces: np.ndarray
) -> None:
    enroller.add("early/1.jpg", lfw_photo(lfw_faces, 0))
    enroller.handler.models.registry.begin_switch(ModelRef(NEW))
    enroller.add("during/1.jpg", lfw_photo(lfw_faces, 1))

    by_key = records(enroller.handler.gallery)
    assert by_key["early/1.jpg"] == ("lbp-v0",)
    assert by_key["during/1.jpg"] == ("lbp-proj-v1", "lbp-v0")


def test_a_redelivered_event_completes_versions_a_switch_added(
    enroller: Enroller, lfw_faces: np.ndarray
) -> None:
    """The level-triggered handler repairs a record that missed the switch's start."""
    enroller.add("late/1.jpg", lfw_photo(lfw_faces, 2))
    enroller.handler.models.registry.begin_switch(ModelRef(NEW))
    enroller.add("late/1.jpg", lfw_photo(lfw_faces, 2))  # same bytes: a duplicate delivery
    assert records(enroller.handler.gallery)["late/1.jpg"] == ("lbp-proj-v1", "lbp-v0")


def test_switch_makes_the_new_version_active_with_a_complete_gallery(
    enroller: Enroller, lfw_faces: np.ndarray
) -> None:
    enroll_some(enroller, lfw_faces, 4)
    models = enroller.handler.models
    models.pointer()  # bootstrapped by enrollment already; stays lbp-v0
    progress: list[tuple[int, int]] = []

    result = switch_model(
        models.registry,
        enroller.handler.gallery,
        ModelRef(NEW),
        ProjectedLbp(),
        settings=enroller.handler.settings,
        reason="test",
        progress=lambda done, total: progress.append((done, total)),
    )

    pointer = models.registry.pointer()
    assert pointer is not None
    assert (pointer.active.version, pointer.pending) == (NEW, None)
    assert result.records == 4
    assert progress[-1] == (4, 4)
    assert all(NEW in v for v in records(enroller.handler.gallery).values())
    enroller.add("after/1.jpg", lfw_photo(lfw_faces, 5))
    assert records(enroller.handler.gallery)["after/1.jpg"] == ("lbp-proj-v1",)
    assert not list(enroller.store.list("gallery", "unknown/"))  # none kept: none written


def keep_unknown(
    unknown: UnknownFaces, crops: dict[str, np.ndarray], embedders: dict[str, Embedder]
) -> None:
    """Keep ``crops`` as unknown faces the way identify does: vectors by every served
    version, grouped with the first (the active one)."""
    new = []
    for fid, crop in crops.items():
        vectors = {v: embed_crops(e, [crop])[0] for v, e in embedders.items()}
        face = UnknownFace(
            fid, "queries", f"{fid}.jpg", "e", (0, 0, 1, 1), model_versions=tuple(vectors)
        )
        new.append(NewFace(face, crop, vectors))
    active = next(iter(embedders))
    unknown.add(new, embedders=embedders, active=active, threshold=0.5)


def test_switch_regroups_unknown_faces_with_the_new_version_before_activating_it(
    enroller: Enroller,
    lfw_faces: np.ndarray,
    astronaut: np.ndarray,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    enroll_some(enroller, lfw_faces, 4)
    models, gallery = enroller.handler.models, enroller.handler.gallery
    old = LbpEmbedder()
    unknown = UnknownFaces(gallery.store, gallery.bucket)
    crops = {
        "eileen-1": astronaut_crop(astronaut, 0),
        "eileen-2": astronaut_crop(astronaut, 4),
        "other": lfw_crop(lfw_faces, 7),
    }
    keep_unknown(unknown, crops, {old.model_version: old})
    assert unknown.groups().model_version == old.model_version
    at_activation: list[Groups] = []
    complete = models.registry.complete_switch

    def activating(version: str, reason: str) -> ActivePointer:
        at_activation.append(UnknownFaces(gallery.store, gallery.bucket).groups())
        return complete(version, reason)

    monkeypatch.setattr(models.registry, "complete_switch", activating)
    switch_model(
        models.registry,
        gallery,
        ModelRef(NEW),
        ProjectedLbp(),
        settings=enroller.handler.settings,
        reason="test",
    )

    (groups,) = at_activation  # as the switch made NEW active, the groups were NEW's already
    assert groups.model_version == NEW
    assert all(NEW in face.model_versions for face in groups.faces.values())
    for fid, crop in crops.items():
        stored = unknown.vector(fid, NEW)
        assert np.allclose(stored, embed_crops(ProjectedLbp(), [crop])[0], atol=1e-6)
    assert groups.faces["eileen-1"].group == groups.faces["eileen-2"].group
    assert groups.faces["other"].group != groups.faces["eileen-1"].group


def test_during_a_switch_writers_serving_the_new_version_keep_its_groups(
    enroller: Enroller, lfw_faces: np.ndarray, astronaut: np.ndarray
) -> None:
    """Groups already computed with the pending version stay so for a writer serving both;
    a writer that read the pointer before the switch began (old version only) regroups with
    its own, and the next writer serving the new one regroups back: never a mixed compare."""
    gallery = enroller.handler.gallery
    old, new = LbpEmbedder(), ProjectedLbp()
    unknown = UnknownFaces(gallery.store, gallery.bucket)
    keep_unknown(unknown, {"a": astronaut_crop(astronaut, 0)}, {old.model_version: old})
    unknown.follow(new, 0.5)  # what the switch does before activating NEW
    both = {old.model_version: old, NEW: new}
    keep_unknown(unknown, {"b": astronaut_crop(astronaut, 4)}, both)
    groups = unknown.groups()
    assert groups.model_version == NEW
    assert groups.faces["a"].group == groups.faces["b"].group

    keep_unknown(
        UnknownFaces(gallery.store, gallery.bucket),
        {"c": lfw_crop(lfw_faces, 7)},
        {old.model_version: old},
    )
    assert unknown.groups().model_version == old.model_version
    keep_unknown(unknown, {"d": lfw_crop(lfw_faces, 8)}, {NEW: new})  # NEW active now
    groups = unknown.groups()
    assert groups.model_version == NEW
    assert all(NEW in face.model_versions for face in groups.faces.values()), groups.faces
