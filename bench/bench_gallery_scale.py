"""Gallery at scale: enrollment writes, predictor cold start, polls, changes, memory, queries.

    nice -n 5 .venv/bin/python bench/bench_gallery_scale.py            # 10k, 100k, 1M
    nice -n 5 .venv/bin/python bench/bench_gallery_scale.py --quick    # 2k, 20k: a smoke run

Writes ``bench/results/gallery_scale.json`` and prints tables. Every figure is measured side by
side in one run on one machine; on a shared machine read the ratios, not the seconds.

What is measured, per store (the folder store, and S3 on moto's server in its own process):

1. **Enrollment writes** per photo: a real photo (scikit-image's astronaut) decoded, detected
   and embedded by the default model, then ``Gallery.enroll``; the writes against the
   photo's own decode + detect + embed time, with today's gallery code (commit 550df73, loaded
   from git) beside them.
2. **A gallery of N faces** (seeded 128-D vectors, ``FACES_PER_IDENTITY`` per identity),
   written through the real code, in one of two ways. With records (``--records`` faces on
   the folder store, ``--s3-records`` on S3, where moto's one process serves every request):
   every face enrolled with ``Gallery.enroll`` (crop, embedding, record, index: what the
   enroll function does, :data:`WRITERS` at a time), so today's code can read the same
   gallery. Index only (10k, 100k, 1M): the rows go into the index through
   ``EmbeddingIndex.apply`` in whole segments, the path ``facerank gallery reindex`` rebuilds
   with. Writing a million records does not fit on this machine (6.3 files and 135 KB of disk
   per record: 135 GB, and about 12 hours at the measured rate); the predictor reads the index
   only, so its figures do not depend on how the rows got there, and ``--enroll-at N`` measures
   that a record's writes into an index of N faces cost what they cost into an empty one.
3. **The predictor's side**, in a fresh process per gallery (so RSS is its own): cold start to
   a first snapshot; a poll with nothing changed; one enrollment and one removal (committed by
   this process through ``Gallery.enroll`` / ``Gallery.remove_source``) until served; RSS
   against the raw vectors plus ids; query p50 (wall clock and CPU time) with 1 and 16
   concurrent clients against the same rows searched as one in-memory matrix, by this code and
   by today's, taking turns (:func:`interleaved_p50s`). Where records exist
   (N <= ``--records``) today's refresher (records and per-face embeddings) runs beside it.
4. **Approximate search** (float16 rows in FAISS) at the largest size: recall@10 of
   identities against the exact search, its query p50 and its memory.
5. **Re-embedding rate**: ``reindex`` of ``--reembed`` records with each of
   ``--reembed-models``, in 1 and 2 processes, overall and steady (process start and model
   load taken out), with the load average beside them.
6. **LanceDB** (``--lancedb SIZES``, after ``pip install lancedb``; no product dependency): the
   same gallery as one LanceDB table, its reader in a fresh process, measured as ours.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any

import cv2
import numpy as np
from skimage import data as skdata

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(HERE)]

from predict_server import synthetic_gallery  # noqa: E402

from facerank.faces.align import GALLERY_CROP_256  # noqa: E402
from facerank.gallery import (  # noqa: E402
    EnrolledFace,
    Gallery,
    Segment,
    SourceRecord,
    face_id,
)
from facerank.gallery.index import SEGMENT_ROWS  # noqa: E402
from facerank.pipeline import FacePipeline  # noqa: E402
from facerank.ports import reserved_ports  # noqa: E402
from facerank.registry import ModelRef  # noqa: E402
from facerank.registry.locate import load_model  # noqa: E402
from facerank.reindex import Workers, reindex  # noqa: E402
from facerank.settings import Settings  # noqa: E402
from facerank.storage import FolderStore, ObjectStore, S3Store  # noqa: E402
from inference.approximate import CANDIDATES_PER_K, ApproximateSegment  # noqa: E402
from inference.search import GalleryIndex, one_blas_thread, search, search_all  # noqa: E402
from inference.snapshot import GalleryRefresher  # noqa: E402

BASELINE_COMMIT = "550df73"
GIT = shutil.which("git") or "git"
VERSION = "bench-v1"
DIM = 128
TOP_K = 10
THRESHOLD = 0.6
QUERIES = 200
ROUNDS = 5
"""Turns in which searches compared side by side take their queries (:func:`interleaved_p50s`)."""
WRITERS = 4
"""Concurrent enrollments while a gallery is written, as several enroll workers would be."""
S3_KEYS = ("bench-access", "bench-secret-key")
RESULTS = HERE / "results" / "gallery_scale.json"


# --- today's code, loaded from git beside the new ------------------------------------------


def baseline_module(path: str, name: str) -> ModuleType:
    """``path`` as it was at :data:`BASELINE_COMMIT`, imported under ``name``."""
    source = subprocess.run(  # noqa: S603 - git showing our own history
        [GIT, "-C", str(ROOT), "show", f"{BASELINE_COMMIT}:{path}"],
        capture_output=True,
        check=True,
        text=True,
    ).stdout
    target = Path(tempfile.mkdtemp(prefix="facerank-baseline-")) / f"{name}.py"
    target.write_text(source)
    spec = importlib.util.spec_from_file_location(name, target)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


# --- stores --------------------------------------------------------------------------------


@contextmanager
def moto_server() -> Iterator[str]:
    """moto's S3 server in its own process (so it does not share this one's GIL)."""
    with reserved_ports(1) as [port]:  # held until moto is gone
        yield from _moto_server(port)


def _moto_server(port: int) -> Iterator[str]:
    process = subprocess.Popen(  # noqa: S603 - our own interpreter running moto
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        yield endpoint
    finally:
        process.terminate()
        process.wait(30)


def open_bench_store(spec: str) -> ObjectStore:
    """``folder:<path>`` or ``s3:<endpoint>``."""
    kind, where = spec.split(":", 1)
    return FolderStore(where) if kind == "folder" else S3Store(where, *S3_KEYS)


# --- writing a gallery ---------------------------------------------------------------------


def record_for(i: int, identity: str) -> SourceRecord:
    key = f"{identity}/{i}.jpg"
    return SourceRecord(
        identity=identity,
        bucket="faces",
        key=key,
        etag=f"{i:032x}",
        faces_seen=1,
        enrolled_at=datetime.now(UTC),
        faces=(EnrolledFace(face_id("faces", key, f"{i:032x}", 0), (0, 0, 80, 80), 0.99, "eyes"),),
    )


def a_crop(seed: int) -> np.ndarray:
    """A face crop: the astronaut's face, shifted a little per face so PNGs differ."""
    face = skdata.astronaut()[20:220, 150:330]
    crop = cv2.resize(face, (GALLERY_CROP_256.size, GALLERY_CROP_256.size))
    return np.roll(crop, seed % 17, axis=1)


def write_gallery(
    gallery: Gallery, faces: int, records: int, enroll: Callable[..., Any] | None = None
) -> dict[str, float]:
    """Enroll ``records`` faces one photo at a time (:data:`WRITERS` at once), index the rest
    in whole segments."""
    ids, identities, vectors = synthetic_gallery(faces, DIM)
    started = time.perf_counter()
    enroll = enroll or gallery.enroll

    def one(i: int) -> None:
        record = record_for(i, identities[i])
        enroll(record, [a_crop(i)], {VERSION: vectors[i : i + 1]})

    with ThreadPoolExecutor(max_workers=WRITERS) as pool:
        list(pool.map(one, range(records)))
    enrolled_s = time.perf_counter() - started
    index = gallery.index(VERSION)
    started = time.perf_counter()
    for start in range(records, faces, SEGMENT_ROWS):
        end = min(start + SEGMENT_ROWS, faces)
        index.apply(Segment.build(ids[start:end], identities[start:end], vectors[start:end]))
    return {"records_s": enrolled_s, "bulk_index_s": time.perf_counter() - started}


# --- the predictor's side, in a child process ----------------------------------------------


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def child(store_spec: str, baseline: bool) -> None:
    """Answer the parent's JSON commands on stdin, one JSON answer per line on stdout."""
    one_blas_thread()  # as the predictor does (python -m inference), for both sides
    gallery = Gallery(open_bench_store(store_spec), "gallery")
    if baseline:
        refresher_cls = baseline_module(
            "inference/snapshot.py", "baseline_snapshot"
        ).GalleryRefresher
    else:
        refresher_cls = GalleryRefresher
    refresher = refresher_cls(gallery, VERSION)
    snapshot = None
    rng = np.random.default_rng(7)
    for line in sys.stdin:
        command = json.loads(line)
        answer: dict[str, Any] = {}
        if command["do"] == "load":
            before = rss_mb()
            started = time.perf_counter()
            snapshot = refresher.refresh()
            answer = {
                "cold_start_s": time.perf_counter() - started,
                "rss_mb": rss_mb() - before,
                "rss_total_mb": rss_mb(),
                "faces": faces_of(snapshot),
            }
        elif command["do"] == "poll":
            times, changed = [], False
            for _ in range(command.get("repeat", 1)):
                started = time.perf_counter()
                fresh = refresher.refresh()
                times.append(time.perf_counter() - started)
                if fresh is not None:
                    snapshot, changed = fresh, True
            answer = {
                "poll_s": statistics.median(times),
                "changed": changed,
                "faces": faces_of(snapshot),
                "has": has_face(snapshot, command.get("face")),
            }
        elif command["do"] == "query":
            answer = query_figures(snapshot, rng, baseline)
        elif command["do"] == "exit":
            return
        print(json.dumps(answer), flush=True)


def faces_of(snapshot: Any) -> int:
    if snapshot is None:
        return 0
    return snapshot.faces if hasattr(snapshot, "faces") else len(snapshot.index)


def has_face(snapshot: Any, face: str | None) -> bool | None:
    if face is None or snapshot is None:
        return None
    if hasattr(snapshot, "segments"):
        return any(face.encode() in set(s.face_ids.tolist()) for s in snapshot.segments)
    return face in snapshot.face_ids


def query_figures(snapshot: Any, rng: np.random.Generator, baseline: bool) -> dict[str, Any]:
    """p50 per query (one face) with 1 and 16 clients; the new side also against the same
    rows as one in-memory matrix, searched by this code and by today's (``search.py`` at
    :data:`BASELINE_COMMIT`, which the issue's "no worse" target is set against)."""
    if baseline:
        run = lambda q: search(snapshot.index, q, TOP_K, THRESHOLD)  # noqa: E731
        return {"baseline": client_p50s(run, snapshot.index.vectors, rng)}
    rows = np.concatenate([s.vectors for s in snapshot.segments])
    ours = lambda q: snapshot.search(q, TOP_K, THRESHOLD)  # noqa: E731
    ids = [s.face_id(r) for s in snapshot.segments for r in range(len(s))]
    names = [s.identity(r) for s in snapshot.segments for r in range(len(s))]
    whole = GalleryIndex.build(ids, names, rows)
    today = baseline_module("inference/search.py", "baseline_search")
    today_whole = today.GalleryIndex.build(ids, names, rows)
    del ids, names
    figures: dict[str, Any] = interleaved_p50s(
        {
            "segments": ours,
            "in_memory": lambda q: search(whole, q, TOP_K, THRESHOLD),
            "in_memory_today": lambda q: today.search(today_whole, q, TOP_K, THRESHOLD),
        },
        rows,
        rng,
    )
    figures["count"] = len(snapshot.segments)
    figures["same_answers"] = all(
        same_ranking(ours(q), search(whole, q, TOP_K, THRESHOLD))
        for q in noisy_queries(rows, rng, 20)
    )
    return figures


def same_ranking(ours: list[list[Any]], theirs: list[list[Any]]) -> bool:
    """Same identities and faces in the same order, similarities equal to float32 rounding
    (BLAS sums a row's products in an order that depends on the matrix's shape)."""
    return all(
        [(m.identity, m.face_id) for m in a] == [(m.identity, m.face_id) for m in b]
        and np.allclose([m.similarity for m in a], [m.similarity for m in b], atol=1e-5)
        for a, b in zip(ours, theirs, strict=True)
    )


def noisy_queries(rows: np.ndarray, rng: np.random.Generator, n: int) -> list[np.ndarray]:
    picked = rows[rng.integers(0, len(rows), n)] + 0.3 * rng.standard_normal((n, rows.shape[1]))
    picked /= np.linalg.norm(picked, axis=1, keepdims=True)
    return [row[None, :].astype(np.float32) for row in picked]


def client_p50s(
    run: Callable[[np.ndarray], Any], rows: np.ndarray, rng: np.random.Generator
) -> dict[str, float]:
    queries = noisy_queries(rows, rng, QUERIES)
    return {f"p50_ms_{clients}": p50_ms(run, queries, clients) for clients in (1, 16)}


def interleaved_p50s(
    runs: dict[str, Callable[[np.ndarray], Any]], rows: np.ndarray, rng: np.random.Generator
) -> dict[str, dict[str, float]]:
    """:func:`client_p50s` of several searches in turns of :data:`ROUNDS`, each turn every
    search in a rotated order, so a machine whose load changes meanwhile weighs on all alike
    (run one after the other on a shared machine, their ratio measured the load as much)."""
    queries = noisy_queries(rows, rng, QUERIES)
    figures: dict[str, dict[str, float]] = {name: {} for name in runs}
    names = list(runs)
    for clients in (1, 16):
        taken: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}
        for turn in range(ROUNDS):
            for name in names[turn % len(names) :] + names[: turn % len(names)]:
                taken[name] += latencies(runs[name], queries[turn::ROUNDS], clients)
        for name in runs:
            wall, cpu = zip(*taken[name], strict=True)
            figures[name][f"p50_ms_{clients}"] = 1000 * statistics.median(wall)
            figures[name][f"cpu_p50_ms_{clients}"] = 1000 * statistics.median(cpu)
    return figures


def p50_ms(run: Callable[[np.ndarray], Any], queries: list[np.ndarray], clients: int) -> float:
    """Median latency of one query while ``clients`` threads issue them back to back."""
    return 1000 * statistics.median(wall for wall, _ in latencies(run, queries, clients))


def latencies(
    run: Callable[[np.ndarray], Any], queries: list[np.ndarray], clients: int
) -> list[tuple[float, float]]:
    """Seconds each query took while ``clients`` threads issue them back to back: wall clock,
    and its thread's CPU time (on a machine shared with other jobs the wall clock measures the
    scheduler as much as the search; the CPU time does not count time spent waiting for a core)."""

    def timed(q: np.ndarray) -> tuple[float, float]:
        started, cpu = time.perf_counter(), time.thread_time()
        run(q)
        return time.perf_counter() - started, time.thread_time() - cpu

    with ThreadPoolExecutor(max_workers=clients) as pool:
        return list(pool.map(timed, queries))


class Child:
    """The parent's handle on one child process."""

    def __init__(self, *flags: str) -> None:
        self.process = subprocess.Popen(  # noqa: S603 - our own interpreter and script
            [sys.executable, __file__, *flags],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def ask(self, **command: Any) -> dict[str, Any]:
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        return json.loads(self.process.stdout.readline())

    def close(self) -> None:
        self.ask_quietly()
        self.process.wait(60)

    def ask_quietly(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"do": "exit"}) + "\n")
        self.process.stdin.flush()


def predictor_figures(
    gallery: Gallery, store_spec: str, faces: int, *, baseline: bool
) -> dict[str, Any]:
    """Cold start, a no-change poll, one enrollment and one removal, RSS, queries."""
    record = record_for(10**9 + int(baseline), "late-comer")
    face = record.faces[0].face_id
    reader = Child("--child", store_spec, *(["--baseline"] if baseline else []))
    figures = follow_figures(
        reader,
        face,
        enroll=lambda vector: gallery.enroll(record, [a_crop(1)], {VERSION: vector}),
        remove=lambda: gallery.remove_source("faces", record.key),
        seed=faces,
        query={},
    )
    loaded = figures.pop("loaded")
    figures |= {"faces": loaded["faces"], "rss_total_mb": loaded["rss_total_mb"]}
    raw_mb = faces * (DIM * 4 + len(face)) / 2**20
    return figures | {"raw_vectors_ids_mb": raw_mb, "rss_ratio": figures["rss_mb"] / raw_mb}


def follow_figures(
    reader: Child,
    face: str,
    *,
    enroll: Callable[[np.ndarray], Any],
    remove: Callable[[], Any],
    seed: int,
    query: dict[str, Any],
) -> dict[str, Any]:
    """What a reader process (ours, today's or LanceDB's) measures, however its gallery is
    written: load, a no-change poll, ``face`` enrolled and removed by the caller's writes and
    polled for after each, then the queries (``query``: the command's extra arguments)."""
    vector = np.random.default_rng(seed).standard_normal((1, DIM)).astype(np.float32)
    vector /= np.linalg.norm(vector)
    try:
        loaded = reader.ask(do="load")
        idle = reader.ask(do="poll", repeat=20)
        started = time.perf_counter()
        enroll(vector)
        enroll_s = time.perf_counter() - started
        added = reader.ask(do="poll", face=face, vector=vector[0].tolist())
        started = time.perf_counter()
        remove()
        remove_s = time.perf_counter() - started
        removed = reader.ask(do="poll", face=face, vector=vector[0].tolist())
        queries = reader.ask(do="query", **query)
    finally:
        reader.close()
    return {
        "loaded": loaded,
        "cold_start_s": loaded["cold_start_s"],
        "rss_mb": loaded["rss_mb"],
        "idle_poll_ms": 1000 * idle["poll_s"],
        "enroll_commit_s": enroll_s,
        "enrollment_poll_s": added["poll_s"],
        "enrollment_served": added["has"],
        "removal_commit_s": remove_s,
        "removal_poll_s": removed["poll_s"],
        "removal_served": removed["has"] is False,
        "queries": queries,
    }


# --- LanceDB on the same gallery --------------------------------------------------------------


def lance_child(uri: str) -> None:
    """The predictor's side served by LanceDB: answer the parent's commands as :func:`child`."""
    import lancedb  # here only: measured, no product dependency

    one_blas_thread()
    table: Any = None
    before = rss_mb()
    for line in sys.stdin:
        command = json.loads(line)
        answer: dict[str, Any] = {}
        if command["do"] == "load":
            started = time.perf_counter()
            table = lancedb.connect(uri).open_table("gallery")
            lance_rank(table, np.ones((1, DIM), np.float32) / np.sqrt(DIM))
            answer = {"cold_start_s": time.perf_counter() - started, "rss_mb": rss_mb() - before}
        elif command["do"] == "poll":
            times = []
            for _ in range(command.get("repeat", 1)):
                started = time.perf_counter()
                version = table.version
                table.checkout_latest()
                changed = table.version != version
                times.append(time.perf_counter() - started)
            face = command.get("face")
            found = None
            if face is not None:
                vector = np.array([command["vector"]], np.float32)
                found = face in lance_nearest(table, vector, "face_id")
            answer = {"poll_s": statistics.median(times), "changed": changed, "has": found}
        elif command["do"] == "query":
            rows = np.asarray(command["rows"], np.float32)
            rng = np.random.default_rng(3)
            answer = client_p50s(partial(lance_rank, table), rows, rng)
            answer["rss_after_mb"] = rss_mb() - before  # LanceDB caches what queries read
        elif command["do"] == "exit":
            return
        print(json.dumps(answer), flush=True)


def lance_nearest(table: Any, query: np.ndarray, column: str) -> list[str]:
    """``column`` of the ``TOP_K * CANDIDATES_PER_K`` nearest faces by LanceDB's flat scan (no
    ANN index: exact over faces, as our segments are), best first."""
    found = (
        table.search(query[0])
        .metric("dot")
        .limit(TOP_K * CANDIDATES_PER_K)
        .select([column])
        .to_arrow()
    )
    return found.column(column).to_pylist()


def lance_rank(table: Any, query: np.ndarray) -> list[str]:
    """The best ``TOP_K`` identities among the nearest faces, each through its best face (what
    :class:`~inference.approximate.ApproximateSegment` does with FAISS's nearest faces)."""
    return list(dict.fromkeys(lance_nearest(table, query, "identity")))[:TOP_K]


def lance_figures(work: Path, faces: int) -> dict[str, Any]:
    """The same gallery as a LanceDB table on the local disk, its predictor in a fresh
    process: write, cold start, no-change poll, one enrollment and one removal served, RSS,
    query p50. One table for the whole gallery: LanceDB keeps its own versions and fragments,
    which is what it would replace of ours (manifest, segments, compaction)."""
    import lancedb  # here only: measured, no product dependency
    import pyarrow as pa  # comes with lancedb

    def rows(ids: list[str], names: list[str], vectors: np.ndarray) -> Any:
        flat = pa.array(np.ascontiguousarray(vectors, np.float32).ravel())
        return pa.table(
            {
                "face_id": ids,
                "identity": names,
                "vector": pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1]),
            }
        )

    uri = str(work / f"lance-{faces}")
    ids, identities, vectors = synthetic_gallery(faces, DIM)
    started = time.perf_counter()
    table = lancedb.connect(uri).create_table("gallery", rows(ids, identities, vectors))
    figures: dict[str, Any] = {"faces": faces, "write_s": time.perf_counter() - started}
    face = "late-comer-face"
    sample = vectors[np.random.default_rng(5).integers(0, faces, QUERIES)]
    figures |= follow_figures(
        Child("--lance-child", uri),
        face,
        enroll=lambda vector: table.add(rows([face], ["late-comer"], vector)),
        remove=lambda: table.delete(f"face_id = '{face}'"),
        seed=faces,
        query={"rows": sample.tolist()},
    )
    del figures["loaded"]
    figures["rss_after_queries_mb"] = figures["queries"].pop("rss_after_mb")
    figures["raw_vectors_ids_mb"] = faces * (DIM * 4 + len(ids[0])) / 2**20
    figures["disk_mb"] = sum(f.stat().st_size for f in Path(uri).rglob("*") if f.is_file()) / 2**20
    return figures


# --- enrollment write cost -----------------------------------------------------------------


def enroll_cost(store_specs: dict[str, str], photos: int) -> dict[str, Any]:
    """Per photo: decode + detect + embed by the default model, then the gallery writes."""
    # the user's settings (model cache included) on a scratch data folder
    settings = Settings.from_env(data_dir=Path(tempfile.mkdtemp(prefix="facerank-bench-")))
    pipeline = FacePipeline.from_settings(settings)
    photo = cv2.imencode(".jpg", cv2.cvtColor(skdata.astronaut(), cv2.COLOR_RGB2BGR))[1].tobytes()
    analysis: list[float] = []
    prepared = []
    for i in range(photos):
        started = time.perf_counter()
        pixels = pipeline.decode(photo).pixels
        faces = pipeline.analyze(pixels).faces[:1]
        vectors = pipeline.embed(faces)
        analysis.append(time.perf_counter() - started)
        crop = pipeline.align(pixels, faces[0], GALLERY_CROP_256).chip
        record = record_for(i, "astronaut")
        prepared.append((record, [crop], {pipeline.model_version: vectors}))
    old_gallery = baseline_module("facerank/gallery/gallery.py", "baseline_gallery").Gallery
    figures: dict[str, Any] = {
        "model": pipeline.model_version,
        "decode_detect_embed_ms": 1000 * statistics.median(analysis),
    }
    for store_name, spec in store_specs.items():
        classes = {"new": Gallery, "today": old_gallery}
        galleries = {
            label: cls(open_bench_store(spec), f"cost-{label}") for label, cls in classes.items()
        }
        times: dict[str, list[float]] = {label: [] for label in galleries}
        for gallery in galleries.values():
            gallery.ensure()
        for record, crops, embeddings in prepared:  # interleaved: both see the same load
            for label, gallery in galleries.items():
                started = time.perf_counter()
                gallery.enroll(record, crops, embeddings)
                times[label].append(time.perf_counter() - started)
        for label, taken in times.items():
            median = 1000 * statistics.median(taken)
            figures[f"{store_name}_{label}_writes_ms"] = median
            figures[f"{store_name}_{label}_ratio"] = median / figures["decode_detect_embed_ms"]
    return figures


def enroll_at_scale(spec: str, indexed: int, records: int) -> dict[str, Any]:
    """Per-record ``Gallery.enroll`` into an empty gallery and into one whose index already
    holds ``indexed`` faces, interleaved: whether a record's writes grow with the gallery
    (what extrapolating a record-by-record million from smaller runs assumes)."""
    store = open_bench_store(spec)
    galleries = {"empty": Gallery(store, "at-empty"), "indexed": Gallery(store, "at-indexed")}
    for gallery in galleries.values():
        gallery.ensure()
    write_gallery(galleries["indexed"], indexed, 0)
    _, identities, vectors = synthetic_gallery(records, DIM)
    crops = [a_crop(i) for i in range(records)]
    taken: dict[str, list[float]] = {label: [] for label in galleries}
    for i in range(records):
        for label, gallery in galleries.items():
            record = record_for(2 * 10**9 + i, identities[i])
            started = time.perf_counter()
            gallery.enroll(record, [crops[i]], {VERSION: vectors[i : i + 1]})
            taken[label].append(time.perf_counter() - started)
    figures: dict[str, Any] = {"indexed": indexed, "records": records}
    for label, times in taken.items():
        figures[f"{label}_median_ms"] = 1000 * statistics.median(times)
    figures["ratio"] = figures["indexed_median_ms"] / figures["empty_median_ms"]
    return figures


# --- approximate search --------------------------------------------------------------------


def approximate_figures(faces: int) -> dict[str, Any]:
    """float16 rows over ``faces`` faces against the exact search: recall@10, p50, memory."""
    one_blas_thread()
    ids, identities, vectors = synthetic_gallery(faces, DIM)
    segments = [
        Segment.build(
            ids[s : s + SEGMENT_ROWS],
            identities[s : s + SEGMENT_ROWS],
            vectors[s : s + SEGMENT_ROWS],
        )
        for s in range(0, faces, SEGMENT_ROWS)
    ]
    del ids, identities
    started = time.perf_counter()
    approx = [ApproximateSegment.build(s) for s in segments]
    build_s = time.perf_counter() - started
    rng = np.random.default_rng(11)
    queries = noisy_queries(vectors, rng, QUERIES)
    hits = total = 0
    for q in queries:
        exact = {m.identity for m in search_all(segments, q, TOP_K, THRESHOLD)[0]}
        found = {m.identity for m in search_all(approx, q, TOP_K, THRESHOLD)[0]}
        hits += len(exact & found)
        total += len(exact)
    return {
        "faces": faces,
        "build_s": build_s,
        "recall_at_10": hits / total,
        "rows_mb_exact": sum(s.vectors.nbytes for s in segments) / 2**20,
        "rows_mb_approximate": sum(a.rows.code_size * len(a) for a in approx) / 2**20,
        "approximate": client_p50s(lambda q: search_all(approx, q, TOP_K, THRESHOLD), vectors, rng),
        "exact": client_p50s(lambda q: search_all(segments, q, TOP_K, THRESHOLD), vectors, rng),
    }


# --- re-embedding ----------------------------------------------------------------------------


def reembed_figures(work: Path, records: int, models: list[str]) -> dict[str, Any]:
    """Records per second re-embedded from their crops by ``reindex``, 1 process and 2.

    Two rates per run: overall (process start and model load included, what one switch of
    ``records`` costs) and steady (those costs taken out). The second ``reindex`` over the same
    gallery finds every record done, so it costs exactly what the first cost beyond embedding
    and writing: the pool's start, each worker's model load, one read of every record and the
    index repair. The load average is recorded beside the rates: on two cores a second process
    only gains when the other core is idle.
    """
    settings = Settings.from_env(data_dir=work / "reembed")  # the user's model cache
    store = FolderStore(settings.buckets_dir)
    _, identities, vectors = synthetic_gallery(records, DIM)
    figures: dict[str, Any] = {"records": records, "store": "folder", "load_average": []}
    for model in models:
        embedder = load_model(ModelRef(model), settings)
        for count in (1, 2):
            gallery = Gallery(store, f"reembed-{model.replace('.', '-')}-{count}")
            gallery.ensure()
            for i in range(records):
                gallery.enroll(
                    record_for(i, identities[i]), [a_crop(i)], {VERSION: vectors[i : i + 1]}
                )
            workers = Workers(settings, ModelRef(model), count)
            figures["load_average"].append(os.getloadavg()[0])
            started = time.perf_counter()
            result = reindex(gallery, embedder, workers=workers)
            seconds = time.perf_counter() - started
            started = time.perf_counter()
            reindex(gallery, embedder, workers=workers)
            overhead = time.perf_counter() - started
            label = f"{model}_{count}_process"
            figures[f"{label}_records_per_s"] = result.embedded / seconds
            figures[f"{label}_start_s"] = overhead
            figures[f"{label}_steady_records_per_s"] = result.embedded / (seconds - overhead)
        for rate in ("records_per_s", "steady_records_per_s"):
            figures[f"{model}_{rate.removesuffix('records_per_s')}speedup"] = (
                figures[f"{model}_2_process_{rate}"] / figures[f"{model}_1_process_{rate}"]
            )
    return figures


# --- driver --------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="facerank-scale-", dir=args.tmp))
    results: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "started": datetime.now(UTC).isoformat(),
        "command": " ".join(sys.argv),
        "scale": [],
    }
    try:
        with moto_server() as endpoint:
            stores = {"folder": f"folder:{work / 'buckets'}", "s3": f"s3:{endpoint}"}
            stores = {k: v for k, v in stores.items() if k in args.stores}
            if not args.skip_enroll_cost:
                results["enroll_cost"] = enroll_cost(stores, args.photos)
                print(json.dumps(results["enroll_cost"], indent=1), flush=True)
            if args.enroll_at:
                results["enroll_at_scale"] = enroll_at_scale(
                    f"folder:{work / 'at-scale'}", args.enroll_at, 200
                )
                print(json.dumps(results["enroll_at_scale"], indent=1), flush=True)
            for store_name, spec in stores.items():
                with_records = args.records if store_name == "folder" else args.s3_records
                for faces in sorted({with_records, *args.sizes} - {0}):
                    if store_name == "s3" and faces > args.s3_max:
                        continue
                    records = faces if faces <= with_records else 0
                    results["scale"].append(scale_row(store_name, spec, faces, records))
                    print(json.dumps(results["scale"][-1], indent=1), flush=True)
                    write(results, args.out)
        if args.approximate:
            results["approximate"] = approximate_figures(args.approximate)
            print(json.dumps(results["approximate"], indent=1), flush=True)
        for faces in args.lancedb:
            results.setdefault("lancedb", []).append(lance_figures(work, faces))
            print(json.dumps(results["lancedb"][-1], indent=1), flush=True)
            write(results, args.out)
        if args.reembed:
            results["reembed"] = reembed_figures(work, args.reembed, args.reembed_models)
            print(json.dumps(results["reembed"], indent=1), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results["finished"] = datetime.now(UTC).isoformat()
    write(results, args.out)
    print(tables(results))
    return results


def scale_row(store_name: str, spec: str, faces: int, records: int) -> dict[str, Any]:
    store = open_bench_store(spec)
    bucket = "gallery"
    for info in list(store.list(bucket)) if store_exists(store, bucket) else []:
        store.delete(bucket, info.key)
    gallery = Gallery(store, bucket)
    gallery.ensure()
    row: dict[str, Any] = {"store": store_name, "faces": faces, "records": records}
    row["write"] = write_gallery(gallery, faces, records)
    row["new"] = predictor_figures(gallery, spec, faces, baseline=False)
    if records == faces:
        row["today"] = predictor_figures(gallery, spec, faces, baseline=True)
    return row


def store_exists(store: ObjectStore, bucket: str) -> bool:
    try:
        next(iter(store.list(bucket, "x")), None)
    except Exception:
        return False
    return True


def tables(results: dict[str, Any]) -> str:
    """The figures as Markdown tables, as the README quotes them."""
    lines = []
    cost = results.get("enroll_cost")
    if cost:
        lines += [
            f"Enrollment writes per photo ({cost['model']}: decode + detect + embed "
            f"{cost['decode_detect_embed_ms']:.0f} ms):",
            "",
            "| store | today | share of the photo's time | new | share |",
            "| --- | --- | --- | --- | --- |",
        ]
        for store in ("folder", "s3"):
            if f"{store}_new_writes_ms" in cost:
                lines.append(
                    f"| {store} | {cost[f'{store}_today_writes_ms']:.1f} ms "
                    f"| {100 * cost[f'{store}_today_ratio']:.1f} % "
                    f"| {cost[f'{store}_new_writes_ms']:.1f} ms "
                    f"| {100 * cost[f'{store}_new_ratio']:.1f} % |"
                )
        lines.append("")
    lines += [
        "| store | faces | code | cold start | idle poll | enrollment served | removal served "
        "| RSS / raw | query p50, 1 / 16 clients | same rows in one matrix "
        "| one matrix, today's search | CPU per query, 1 / 16 clients: ours, one matrix, today's |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in results["scale"]:
        for code in ("today", "new"):
            if code not in row:
                continue
            f = row[code]
            queries = f["queries"].get("segments") or f["queries"].get("baseline")
            whole = f["queries"].get("in_memory")
            today = f["queries"].get("in_memory_today")
            lines.append(
                f"| {row['store']} | {row['faces']:,} | {code} | {f['cold_start_s']:.2f} s "
                f"| {f['idle_poll_ms']:.2f} ms | {f['enrollment_poll_s']:.3f} s "
                f"| {f['removal_poll_s']:.3f} s "
                f"| {f['rss_mb']:.0f} / {f['raw_vectors_ids_mb']:.0f} MB "
                f"| {queries['p50_ms_1']:.2f} / {queries['p50_ms_16']:.2f} ms "
                + "".join(
                    f"| {m['p50_ms_1']:.2f} / {m['p50_ms_16']:.2f} ms " if m else "| "
                    for m in (whole, today)
                )
                + "| "
                + ", ".join(
                    f"{m['cpu_p50_ms_1']:.1f} / {m['cpu_p50_ms_16']:.1f} ms"
                    for m in (queries, whole, today)
                    if m and "cpu_p50_ms_1" in m
                )
                + " |"
            )
    lance = results.get("lancedb")
    if lance:
        lines += [
            "",
            "LanceDB (one table on the local disk, flat scan, the same gallery):",
            "",
            "| faces | write | cold start | idle poll | enrollment served | removal served "
            "| RSS / raw, after load / after queries | query p50, 1 / 16 clients |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        lines += [
            f"| {f['faces']:,} | {f['write_s']:.2f} s | {f['cold_start_s']:.2f} s "
            f"| {f['idle_poll_ms']:.2f} ms "
            f"| {f['enrollment_poll_s']:.3f} s | {f['removal_poll_s']:.3f} s "
            f"| {f['rss_mb']:.0f} / {f['rss_after_queries_mb']:.0f} / "
            f"{f['raw_vectors_ids_mb']:.0f} MB "
            f"| {f['queries']['p50_ms_1']:.2f} / {f['queries']['p50_ms_16']:.2f} ms |"
            for f in lance
        ]
    approx = results.get("approximate")
    if approx:
        lines += [
            "",
            f"Approximate search at {approx['faces']:,} faces: recall@10 "
            f"{approx['recall_at_10']:.3f}, rows {approx['rows_mb_approximate']:.0f} MB "
            f"instead of {approx['rows_mb_exact']:.0f} MB, built in {approx['build_s']:.1f} s, p50 "
            f"{approx['approximate']['p50_ms_1']:.1f} / "
            f"{approx['approximate']['p50_ms_16']:.1f} ms "
            f"(1 / 16 clients) against exact {approx['exact']['p50_ms_1']:.1f} / "
            f"{approx['exact']['p50_ms_16']:.1f} ms.",
        ]
    reembed = results.get("reembed")
    if reembed:
        rates = [
            f"{key.removesuffix('_records_per_s').replace('_', ' ')}: {value:.1f} records/s"
            for key, value in reembed.items()
            if key.endswith("_records_per_s")
        ]
        lines += ["", f"Re-embedding {reembed['records']} records: " + "; ".join(rates) + "."]
    return "\n".join(lines)


def write(results: dict[str, Any], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--lance-child", help=argparse.SUPPRESS)
    parser.add_argument(
        "--lancedb",
        type=lambda s: [int(x) for x in s.split(",") if x],
        default=[],
        help="gallery sizes to measure as a LanceDB table too (pip install lancedb first)",
    )
    parser.add_argument("--baseline", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="2k and 20k faces only")
    parser.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",") if x])
    parser.add_argument("--stores", default="folder,s3")
    parser.add_argument("--records", type=int, default=10_000, help="records written on folder")
    parser.add_argument("--s3-records", type=int, default=1_000, help="records written on S3")
    parser.add_argument("--s3-max", type=int, default=1_000_000)
    parser.add_argument("--photos", type=int, default=20)
    parser.add_argument("--approximate", type=int, default=None)
    parser.add_argument("--skip-enroll-cost", action="store_true")
    parser.add_argument(
        "--enroll-at",
        type=int,
        default=0,
        help="faces indexed before timing 200 enrollments against an empty gallery (0: skip)",
    )
    parser.add_argument("--reembed", type=int, default=400, help="records re-embedded (0: skip)")
    parser.add_argument(
        "--reembed-models", type=lambda s: s.split(","), default=["lbp-v0", "dlib-r34-v1"]
    )
    parser.add_argument("--tmp", default=None)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--tables", type=Path, help="print the tables of a results file, run nothing"
    )
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, args.baseline)
        return
    if args.lance_child:
        lance_child(args.lance_child)
        return
    if args.tables:
        print(tables(json.loads(args.tables.read_text())))
        return
    if args.sizes is None:
        args.sizes = [2_000, 20_000] if args.quick else [10_000, 100_000, 1_000_000]
    if args.approximate is None:
        args.approximate = 0 if args.quick else max(args.sizes)
    if args.quick:
        args.records = min(args.records, 2_000)
        args.s3_records = min(args.s3_records, 500)
        args.photos = min(args.photos, 4)
        args.reembed = min(args.reembed, 60)
    args.stores = args.stores.split(",")
    resource.setrlimit(resource.RLIMIT_NOFILE, resource.getrlimit(resource.RLIMIT_NOFILE))
    run(args)


if __name__ == "__main__":
    main()
