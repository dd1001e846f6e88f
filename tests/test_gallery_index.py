"""The gallery index: segments, the manifest's conditional writes, compaction, drift repair,
and the predictor's refresher following it, on both store backends."""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from facerank.cli.main import main as cli
from facerank.embedding import LbpEmbedder
from facerank.errors import GalleryIndexDamagedError, PreconditionFailedError
from facerank.gallery import EmbeddingIndex, Gallery, IndexChange, Segment
from facerank.gallery.index import MERGE_AT, SEGMENT_ROWS, SegmentRef, plan_compaction
from facerank.registry import ModelRef
from facerank.reindex import Workers, embed_crops, reindex
from facerank.settings import Settings
from facerank.storage import FolderStore, ObjectStore
from functions.source.emitter import Emitter
from functions.source.reconcile import Reconciler
from inference.approximate import ApproximateSegment
from inference.search import GalleryIndex, search, search_all
from inference.snapshot import APPROXIMATE_MIN_ROWS, TAIL_ROWS, GalleryRefresher
from tests.plugins.sink import EventSink
from tests.test_gallery import VERSION, enroll, make_record

DIM = 8


def unit_rows(rng: np.random.Generator, n: int, dim: int = DIM) -> np.ndarray:
    rows = rng.normal(size=(n, dim)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def segment(ids: list[str], seed: int = 0, identity: str | None = None) -> Segment:
    names = [identity or f"person-{int(f.rsplit('-', 1)[1]) % 3}" for f in ids]
    return Segment.build(ids, names, unit_rows(np.random.default_rng(seed), len(ids)))


@pytest.fixture
def gallery(store: ObjectStore) -> Gallery:
    gallery = Gallery(store, "gallery")
    gallery.ensure()
    return gallery


class CountingStore:
    """Passes every call through to ``store`` and counts them by method name."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.store, name)

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return method(*args, **kwargs)

        return counted


def test_a_segment_reads_back_what_was_written() -> None:
    built = segment([f"f-{i}" for i in range(7)], identity=None)
    read = Segment.from_bytes(built.ids_bytes(), built.vectors_bytes())
    assert read.names == built.names == ("person-0", "person-1", "person-2")
    assert [read.face_id(r) for r in range(len(read))] == [
        built.face_id(r) for r in range(len(built))
    ]
    assert np.array_equal(read.vectors, built.vectors)
    assert [read.identity(r) for r in range(len(read))] == sorted(
        read.identity(r) for r in range(len(read))
    )
    members = Segment.from_bytes(built.ids_bytes(), None)
    assert len(members) == 7
    assert members.vectors.shape == (7, 0)
    with pytest.raises(ValueError, match="not a gallery segment"):
        Segment.from_bytes(b'{"format": "other"}\n', None)


def test_search_over_segments_equals_search_over_one_index() -> None:
    rng = np.random.default_rng(3)
    ids = [f"f-{i:03d}" for i in range(300)]
    names = [f"id-{i % 37}" for i in range(300)]
    vectors = unit_rows(rng, 300)
    vectors[10] = vectors[47]  # exact ties, within and across identities and segments
    vectors[11] = vectors[200]
    queries = np.vstack([unit_rows(rng, 5), vectors[[10, 200]]])
    whole = search(GalleryIndex.build(ids, names, vectors), queries, 10, 0.8)
    parts = [Segment.build(ids[a:b], names[a:b], vectors[a:b]) for a, b in ((0, 90), (90, 300))]
    assert search_all(parts, queries, 10, 0.8) == whole


def test_apply_adds_once_and_removes_by_rewriting(store: ObjectStore) -> None:
    index = EmbeddingIndex(store, "gallery", VERSION)
    store.ensure_bucket("gallery")
    assert index.apply(segment(["a-0", "a-1", "a-2"])).added == 3
    assert index.apply(segment(["a-1", "a-3"])).added == 1  # a-1 is not added twice
    change = index.apply(removed=["a-1", "nobody-9"])
    assert (change.added, change.removed) == (0, 1)
    assert index.face_ids() == {"a-0", "a-2", "a-3"}
    for info in store.list("gallery"):  # the removed face is gone from every byte
        assert b"a-1" not in store.get("gallery", info.key).data
    assert len(list(store.list("gallery", index.prefix + "segments/"))) == 4  # 2 segments
    with pytest.raises(ValueError, match="8-D"):
        index.apply(Segment.build(["b-0"], ["b"], np.ones((1, 4), np.float32)))


def test_concurrent_writers_lose_nothing(store: ObjectStore) -> None:
    """Writers racing on one manifest, adding and removing, with compactions under them."""
    store.ensure_bucket("gallery")

    def work(worker: int) -> None:
        index = EmbeddingIndex(store, "gallery", VERSION)  # one per worker: own caches
        for n in range(6):
            index.apply(segment([f"w{worker}n{n}-{n}", f"w{worker}n{n}-x-{n}"], seed=worker))
            index.apply(removed=[f"w{worker}n{n}-x-{n}"])

    with ThreadPoolExecutor(max_workers=6) as pool:
        list(pool.map(work, range(6)))
    index = EmbeddingIndex(store, "gallery", VERSION)
    assert index.face_ids() == {f"w{w}n{n}-{n}" for w in range(6) for n in range(6)}
    manifest, _ = index.read()
    assert manifest.rows == 36
    assert len(manifest.segments) < 36  # compaction merged
    listed = {r.name for r in manifest.segments}
    stored = {i.key.rsplit("/", 1)[1].split(".")[0] for i in store.list("gallery", "index/")}
    assert stored - {"manifest"} == listed  # losers cleaned up what they wrote


def test_compaction_merges_one_tier_at_a_time(store: ObjectStore) -> None:
    store.ensure_bucket("gallery")
    index = EmbeddingIndex(store, "gallery", VERSION)
    for i in range(MERGE_AT - 1):
        index.apply(segment([f"s-{i}"]))
    assert len(index.read()[0].segments) == MERGE_AT - 1
    index.apply(segment([f"s-{MERGE_AT}"]))
    [merged] = index.read()[0].segments
    assert merged.rows == MERGE_AT
    loaded = index.load(merged.name)
    assert sorted(loaded.face_id(r) for r in range(MERGE_AT)) == sorted(
        [f"s-{i}" for i in range(MERGE_AT - 1)] + [f"s-{MERGE_AT}"]
    )


def test_compaction_plan_is_size_tiered() -> None:
    small = [SegmentRef(f"s{i}", 1) for i in range(MERGE_AT)]
    middle = [SegmentRef(f"m{i}", MERGE_AT) for i in range(MERGE_AT - 1)]
    full = [SegmentRef("f", SEGMENT_ROWS)]
    assert plan_compaction([*full, *middle, *small]) == tuple(small)
    assert plan_compaction([*full, *middle, *small[:-1]]) == ()
    assert plan_compaction([SegmentRef(f"b{i}", SEGMENT_ROWS // 2) for i in range(40)]) == ()


def test_refresher_polls_in_one_call_and_loads_only_what_changed(store: ObjectStore) -> None:
    counting = CountingStore(store)
    gallery = Gallery(counting, "gallery")  # type: ignore[arg-type]
    gallery.ensure()
    for i in range(3):
        enroll(gallery, f"person{i}/1.jpg", seed=i)
    refresher = GalleryRefresher(Gallery(counting, "gallery"), VERSION)  # type: ignore[arg-type]
    first = refresher.refresh()
    assert first is not None
    assert first.faces == 3
    counting.calls.clear()
    assert refresher.refresh() is None
    assert sum(counting.calls.values()) == 1  # one HEAD of the manifest
    enroll(gallery, "late/1.jpg", seed=9)
    counting.calls.clear()
    second = refresher.refresh()
    assert second is not None
    assert second.faces == 4
    assert "late" in second.identities
    assert counting.calls == Counter({"stat": 1, "get": 3})  # manifest + one new segment
    gallery.remove_source("faces", "late/1.jpg")
    third = refresher.refresh()
    assert third is not None
    assert "late" not in third.identities
    assert third.faces == 3


def test_a_change_keeps_large_segments_and_rebuilds_only_the_tail(gallery: Gallery) -> None:
    index = gallery.index(VERSION)
    big = TAIL_ROWS + 10
    index.apply(segment([f"big-{i}" for i in range(big)]))
    index.apply(segment(["small-0"], identity="small"))
    refresher = GalleryRefresher(gallery, VERSION)
    first = refresher.refresh()
    assert first is not None
    assert sorted(len(s) for s in first.segments) == [1, big]
    index.apply(segment(["small-1"], identity="small"))
    index.apply(removed=["small-0", "big-5"])  # rewrites the large segment too
    second = refresher.refresh()
    assert second is not None
    assert sorted(len(s) for s in second.segments) == [1, big - 1]
    index.apply(segment(["small-2"], identity="small"))
    third = refresher.refresh()
    assert third is not None
    [large] = [s for s in second.segments if len(s) > 1]
    assert any(s is large for s in third.segments)  # shared, not copied
    assert third.faces == big + 1
    assert third.search(large.vectors[:1], 1, 0.5)[0][0].similarity == pytest.approx(1.0, abs=1e-5)


def test_a_crash_between_record_and_index_is_repaired(
    gallery: Gallery, monkeypatch: pytest.MonkeyPatch
) -> None:
    enroll(gallery, "kept/1.jpg")

    def crash(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt("killed after the record write")

    with monkeypatch.context() as patch:
        patch.setattr(EmbeddingIndex, "apply", crash)
        with pytest.raises(KeyboardInterrupt):
            enroll(gallery, "crashed/1.jpg", seed=1)
    assert gallery.identities() == {"kept": 1, "crashed": 1}  # the record is committed
    refresher = GalleryRefresher(gallery, VERSION)
    snapshot = refresher.refresh()
    assert snapshot is not None
    assert snapshot.identities == {"kept"}
    assert gallery.repair_indexes() == {VERSION: IndexChange(1, 0)}
    snapshot = refresher.refresh()
    assert snapshot is not None
    assert snapshot.identities == {"kept", "crashed"}
    assert gallery.repair_indexes()[VERSION] == IndexChange(0, 0)  # nothing left to repair


def test_index_rows_without_a_record_are_dropped_by_repair(gallery: Gallery) -> None:
    kept = enroll(gallery, "kept/1.jpg")
    gallery.index(VERSION).apply(segment(["ghost-0"], identity="ghost"))
    assert gallery.repair_indexes()[VERSION] == IndexChange(0, 1)
    assert gallery.index(VERSION).face_ids() == {kept.faces[0].face_id}


def test_reindex_rebuilds_a_lost_index(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gallery = Gallery(FolderStore(tmp_path / "buckets"), "gallery")
    gallery.ensure()
    records = [enroll(gallery, f"p{i % 3}/{i}.jpg", seed=i) for i in range(12)]
    gallery.index(VERSION).clear()
    assert cli(["--data-dir", str(tmp_path), "gallery", "reindex", "--rebuild"]) == 0
    assert f"{VERSION}: 12 face(s) indexed, 12 added, 0 removed" in capsys.readouterr().out
    fresh = Gallery(gallery.store, "gallery").index(VERSION)
    assert fresh.face_ids() == {f.face_id for r in records for f in r.faces}


def test_an_emptied_index_leaves_nothing_and_a_stale_delete_loses(store: ObjectStore) -> None:
    store.ensure_bucket("gallery")
    index = EmbeddingIndex(store, "gallery", VERSION)
    index.apply(segment(["a-0"]))
    index.apply(removed=["a-0"])
    assert list(store.list("gallery")) == []
    written = store.put("gallery", "k", b"1")
    with pytest.raises(PreconditionFailedError):
        store.delete("gallery", "k", if_match="0" * 32)
    store.delete("gallery", "k", if_match=written.etag)
    assert not store.exists("gallery", "k")
    with pytest.raises(PreconditionFailedError):
        store.delete("gallery", "k", if_match=written.etag)


def clustered(faces: int, per_identity: int, seed: int) -> tuple[list[str], list[str], np.ndarray]:
    """Faces scattered around one centre per identity, as a real gallery's are."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((faces // per_identity + 1, 64)).astype(np.float32)
    owner = np.arange(faces) // per_identity
    rows = centres[owner] + 0.5 * rng.standard_normal((faces, 64)).astype(np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    return [f"f-{i}" for i in range(faces)], [f"id-{o:05d}" for o in owner], rows


def test_approximate_search_finds_what_exact_search_finds() -> None:
    ids, names, rows = clustered(20_000, 5, seed=1)  # the 2nd to 10th: nearly equal, far
    exact = Segment.build(ids, names, rows)
    approximate = ApproximateSegment.build(exact)
    queries = rows[::997] + 0.2 * np.random.default_rng(2).standard_normal((21, 64)).astype("f4")
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    found = search_all([approximate], queries, 10, 0.8)
    wanted = search_all([exact], queries, 10, 0.8)
    recall = np.mean(
        [
            len({m.identity for m in f} & {m.identity for m in w}) / 10
            for f, w in zip(found, wanted, strict=True)
        ]
    )
    assert recall >= 0.99
    assert [(f[0].identity, f[0].face_id) for f in found] == [
        (w[0].identity, w[0].face_id) for w in wanted
    ]
    # float16 rows: similarities within their rounding
    assert [f[0].similarity for f in found] == pytest.approx(
        [w[0].similarity for w in wanted], abs=2e-3
    )


def test_a_large_gallery_is_served_approximately_above_the_setting(gallery: Gallery) -> None:
    ids, names, rows = clustered(APPROXIMATE_MIN_ROWS, 4, seed=3)
    gallery.index(VERSION).apply(Segment.build(ids, names, rows))
    gallery.index(VERSION).apply(Segment.build(["small-0"], ["small"], rows[-1:]))
    exact = GalleryRefresher(gallery, VERSION, approximate_above=0).refresh()
    approximate = GalleryRefresher(gallery, VERSION, approximate_above=1000).refresh()
    assert exact is not None
    assert approximate is not None
    assert sorted(type(s).__name__ for s in approximate.segments) == [
        "ApproximateSegment",
        "Segment",
    ]
    assert approximate.faces == exact.faces == APPROXIMATE_MIN_ROWS + 1
    assert approximate.identities == exact.identities
    query = rows[:1]
    [[best, *_]] = approximate.search(query, 3, 0.8)
    assert best.face_id == exact.search(query, 3, 0.8)[0][0].face_id == ids[0]


def test_parallel_reembedding_gives_every_record_the_version(tmp_path: Path) -> None:
    """Two worker processes, each loading lbp-v0 itself, shard the records between them."""
    settings = Settings(data_dir=tmp_path)
    gallery = Gallery(FolderStore(settings.buckets_dir), settings.gallery_bucket)
    gallery.ensure()
    rng = np.random.default_rng(5)
    records = []
    for i in range(12):
        crop = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
        record = make_record(f"p{i % 4}/{i}.jpg")
        records.append(gallery.enroll(record, [crop], {"seed-v0": unit_rows(rng, 1)}))
    embedder = LbpEmbedder()
    result = reindex(gallery, embedder, workers=Workers(settings, ModelRef("lbp-v0"), 2))
    assert (result.records, result.embedded) == (12, 12)
    assert all("lbp-v0" in r.model_versions for r in gallery.records())
    faces = {f.face_id for r in records for f in r.faces}
    assert gallery.index("lbp-v0").face_ids() == faces
    assert gallery.index("seed-v0").face_ids() == faces
    face = records[3].faces[0].face_id
    expected = embed_crops(embedder, [gallery.crop(face)])[0]
    assert np.allclose(gallery.embedding(face, "lbp-v0"), expected, atol=1e-6)


def test_the_reconcile_sweep_repairs_index_drift(
    folder_store: FolderStore, event_sink: EventSink, tmp_path: Path
) -> None:
    """A record whose index write a crash cut off is served again after the hourly sweep."""
    gallery = Gallery(folder_store, "gallery")
    gallery.ensure()
    folder_store.ensure_bucket("faces")
    kept = enroll(gallery, "kept/1.jpg")
    gallery.index(VERSION).apply(removed=[kept.faces[0].face_id])  # the index lost it
    emitter = Emitter(event_sink.url, Settings(data_dir=tmp_path), attempts=2, backoff=0.01)
    report = Reconciler(folder_store, gallery, emitter).run_once()
    assert report.index_repaired == 1
    assert gallery.index(VERSION).face_ids() == {kept.faces[0].face_id}


def test_a_damaged_manifest_is_a_typed_error_that_a_rebuild_cures(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gallery = Gallery(FolderStore(tmp_path / "buckets"), "gallery")
    gallery.ensure()
    record = enroll(gallery, "alice/1.jpg")
    gallery.store.put("gallery", f"index/{VERSION}/manifest.json", b"\x00 torn by a power cut")
    with pytest.raises(GalleryIndexDamagedError, match="reindex --rebuild"):
        GalleryRefresher(gallery, VERSION).refresh()
    assert cli(["--data-dir", str(tmp_path), "gallery", "reindex", "--rebuild"]) == 0
    assert f"{VERSION}: 1 face(s) indexed, 1 added" in capsys.readouterr().out
    snapshot = GalleryRefresher(Gallery(gallery.store, "gallery"), VERSION).refresh()
    assert snapshot is not None
    assert snapshot.identities == {record.identity}
