"""Every script under ``bench/`` runs, at tiny sizes, so none can rot unnoticed.

Each runs as a user runs it (``python bench/<script>.py``), from a copy of ``bench/`` in a
scratch folder so the committed ``bench/results/*.json`` stay untouched, and must write its
results file with the figures the README quotes. The sizes prove the code paths, not speed:
no figure from here means anything (``bench/results`` holds the real runs). Marked ``bench``:
``-m "not bench"`` leaves them out of a quick run.

Every script has its test here but the two helpers, covered through their users:
``predict_server.py`` runs as ``bench_predict.py``'s servers (both searches, its bench
embedder included) and lends ``bench_gallery_scale.py`` its synthetic gallery;
``sidebyside.py``'s ``Ratio`` and ``time_pair`` feed ``bench_predict.py``,
``bench_alignment.py``, ``bench_grpc_startup.py`` and ``bench_training.py``. Scripts that read
development data (``FACERANK_BENCH_DATA``, AT&T's and LFW's layouts) get a generated stand-in
folder from their test, never ``/work/shared``; those that need models get the session's
converted caches (``tests/plugins/pretrained.py``) through ``FACERANK_CACHE_DIR``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from facerank.settings import Settings
from tests.plugins.enroller import lfw_photo
from tests.plugins.faces import DETECTABLE_FACES, encode, face_shot, paste_faces, variant
from tests.plugins.pretrained import EXPORTED_DESCRIPTOR

pytestmark = [pytest.mark.slow, pytest.mark.bench]

ROOT = Path(__file__).resolve().parent.parent


def run_bench(
    tmp_path: Path, script: str, *args: str, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """Run ``bench/<script>`` from a scratch copy; the JSON it wrote (the only one)."""
    copy = tmp_path / "checkout"
    shutil.copytree(ROOT / "bench", copy / "bench", ignore=shutil.ignore_patterns("results"))
    # bench/fuzz.py runs tests from its checkout; bench_gallery_scale.py reads today's code
    # from the git history
    for shared in ("tests", "pyproject.toml", ".git"):
        (copy / shared).symlink_to(ROOT / shared)
    done = subprocess.run(
        [sys.executable, str(copy / "bench" / script), *args],
        cwd=copy,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    [written] = (copy / "bench" / "results").glob("*.json")
    return json.loads(written.read_text(encoding="utf-8"))


def merged_cache(tmp_path: Path, *sources: Settings) -> Path:
    """One model cache holding what each of ``sources``' caches holds."""
    cache = tmp_path / "cache"
    for settings in sources:
        shutil.copytree(settings.cache_dir, cache, dirs_exist_ok=True)
    return cache


def lfw_people(images: Path, lfw_faces: np.ndarray, people: int, photos: int) -> Path:
    """``images/<Name>/<Name>_NNNN.jpg``, LFW's layout: ``people`` people, ``photos`` re-shots
    each of a face Haar finds in every shot. Sorted by name, person ``p`` shows
    ``DETECTABLE_FACES[p % 8]``: the first eight people are eight different faces."""
    rng = np.random.default_rng(7)
    for p in range(people):
        name = f"Person_{p:02d}"
        (images / name).mkdir(parents=True)
        face = lfw_faces[DETECTABLE_FACES[p % len(DETECTABLE_FACES)]]
        for n in range(1, photos + 1):
            shot = face_shot(face, rng, flip=False)
            (images / name / f"{name}_{n:04d}.jpg").write_bytes(encode(shot, "JPEG", quality=90))
    return images


def face_folders(root: Path, lfw_faces: np.ndarray, people: Iterable[int], photos: int) -> Path:
    """``root/s<number>/<n>.jpg`` for each number in ``people``: the AT&T layout, with LFW
    faces Haar finds, a different one per person."""
    rng = np.random.default_rng(3)
    for p, number in enumerate(people):
        folder = root / f"s{number}"
        folder.mkdir(parents=True)
        face = lfw_photo(lfw_faces, p % 100)
        for n in range(1, photos + 1):
            shot = variant(face, rng) if n > 1 else face
            (folder / f"{n}.jpg").write_bytes(encode(shot, "JPEG", quality=90))
    return root


def test_bench_pipeline(tmp_path: Path, fetched_settings: Settings) -> None:
    # The detector comparison runs the default pipeline: SSD, landmarks and dlib-r34-v1.
    env = {"FACERANK_CACHE_DIR": str(fetched_settings.cache_dir)}
    results = run_bench(tmp_path, "bench_pipeline.py", "--repeat", "2", env=env)
    assert results["savedmodel_single_chip"]["ratio"] > 0


def test_ablate_lfw_alignment(
    tmp_path: Path, astronaut: np.ndarray, fetched_settings: Settings
) -> None:
    """Three "people", each two re-shots of the astronaut (a face the SSD finds), LFW's layout."""
    rng = np.random.default_rng(5)
    images = tmp_path / "images"
    people = ("Ann_A", "Bob_B", "Cid_C")
    for name in people:
        (images / name).mkdir(parents=True)
        for n in (1, 2):
            shot = encode(variant(astronaut, rng), "JPEG", quality=90)
            (images / name / f"{name}_{n:04d}.jpg").write_bytes(shot)
    matched = [f"{name}\t1\t2" for name in people]
    mismatched = [f"{a}\t1\t{b}\t2" for a, b in zip(people, people[1:] + people[:1], strict=True)]
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("3\t3\n" + "".join(f"{line}\n" for line in matched + mismatched))
    env = {"FACERANK_CACHE_DIR": str(fetched_settings.cache_dir)}
    results = run_bench(
        tmp_path,
        "ablate_lfw_alignment.py",
        *("--images", str(images), "--pairs-train", str(pairs), "--pairs-test", str(pairs)),
        env=env,
    )
    assert results["faces"] == 6
    assert set(results["variants"]) == {
        "dlib68",
        "dlib5",
        "dlib68-verified",
        "dlib5-verified",
        "dlib68-no-rescue",
    }
    assert all(0.0 <= v["accuracy"] <= 1.0 for v in results["variants"].values())


def test_bench_predict_and_its_server(tmp_path: Path) -> None:
    results = run_bench(
        tmp_path, "bench_predict.py", "--sizes", "200", "--rounds", "2", "--seconds", "0.2"
    )
    [run] = results["runs"]
    assert run["faces"] == 200
    assert run["search_only"]["verdict"]
    assert [cell["clients"] for cell in run["cells"]] == [1, 4, 16]
    assert all(cell["p50_speedup_rounds"]["repeats"] == 2 for cell in run["cells"])


def test_bench_grpc_startup(tmp_path: Path) -> None:
    results = run_bench(tmp_path, "bench_grpc_startup.py", "--rounds", "1")
    assert results["with_grpc_s"] > 0
    assert results["without_over_with"]["verdict"]


def test_bench_soak(tmp_path: Path) -> None:
    results = run_bench(tmp_path, "bench_soak.py", "--requests", "8", "--clients", "2")
    assert results["errors"] == 0
    assert results["verdicts"]["zero_errors"]


def test_bench_training(tmp_path: Path) -> None:
    results = run_bench(tmp_path, "bench_training.py", "--repeat", "1", "--steps", "2")
    scratch = results["scratch_112"]
    assert [len(scratch["samples"][k]) for k in ("1", "2")] == [1, 1]
    assert scratch["ratio_two_to_one_per_repeat"]["repeats"] == 1


def test_bench_fuzz(tmp_path: Path) -> None:
    results = run_bench(tmp_path, "fuzz.py", "--minutes", "0.001", "--examples", "3")
    assert not results["failed"]
    assert results["examples"] > 0


def test_bench_alignment(
    tmp_path: Path, lfw_faces: np.ndarray, pretrained_settings: Settings
) -> None:
    dataset = face_folders(tmp_path / "faces", lfw_faces, people=range(1, 5), photos=3)
    env = {"FACERANK_CACHE_DIR": str(pretrained_settings.cache_dir)}
    results = run_bench(
        tmp_path, "bench_alignment.py", "--dataset", str(dataset), "--repeat", "2", env=env
    )
    assert set(results["accuracy"]) == {"box", "eyes", "landmarks"}
    assert results["cost"]["landmarks_over_detect"]["repeats"] == 2


def test_finetune_att(tmp_path: Path, lfw_faces: np.ndarray, pretrained_settings: Settings) -> None:
    # The script trains on photos 1-5 of s1-s30 and holds out the rest. About the least that
    # runs every step (a third of the faces of all 36 people): ten trained people, two more
    # than a batch's 8 identities x 4 faces needs in case Haar misses a re-shot, each with new
    # photos 6-7, and three unseen people (s31-s33) of whom at least two keep a face.
    people = [*range(1, 11), *range(31, 34)]
    dataset = face_folders(tmp_path / "att", lfw_faces, people=people, photos=7)
    env = {"FACERANK_CACHE_DIR": str(pretrained_settings.cache_dir)}
    results = run_bench(
        tmp_path,
        "finetune_att.py",
        "--dataset",
        str(dataset),
        "--losses",
        "semihard",
        "--steps",
        "1",
        env=env,
    )
    assert results["faces"]["train"] > 0
    assert results["faces"]["a_seen_people_new_photos"] > 0
    assert results["faces"]["b_unseen_people"] >= 2
    assert set(results["fine_tuned"]) == {"semihard"}


def test_bench_descriptors(
    tmp_path: Path, pretrained_settings: Settings, descriptor_settings: Settings
) -> None:
    """The exported human-models descriptor (one: each export costs a minute) beside dlib."""
    cache = merged_cache(tmp_path, pretrained_settings, descriptor_settings)
    results = run_bench(
        tmp_path,
        "bench_descriptors.py",
        *("--repeat", "1", "--batch", "8", "--models", EXPORTED_DESCRIPTOR),
        env={"FACERANK_CACHE_DIR": str(cache)},
    )
    assert set(results["models"]) == {"dlib-r34-v1", EXPORTED_DESCRIPTOR}
    dlib = results["models"]["dlib-r34-v1"]
    assert dlib["batched_ratio_to_dlib"] == dlib["single_ratio_to_dlib"] == 1.0
    assert all(
        figures["dim"] > 0 and figures["batched_ms_per_face"] > 0
        for figures in results["models"].values()
    )


def test_survey_detectors(
    tmp_path: Path, astronaut: np.ndarray, lfw_faces: np.ndarray, fetched_settings: Settings
) -> None:
    """AT&T's layout (grey PGM re-shots of the astronaut, which the SSD finds with plausible
    landmarks), a small LFW folder and one group photo as face-api's samples."""
    rng = np.random.default_rng(11)
    att = tmp_path / "att"
    for person in ("s1", "s2"):
        (att / person).mkdir(parents=True)
        for n in (1, 2):
            grey = np.asarray(Image.fromarray(variant(astronaut, rng)).convert("L"))
            (att / person / f"{n}.pgm").write_bytes(encode(grey, "PPM"))
    lfw = lfw_people(tmp_path / "lfw", lfw_faces, people=2, photos=1)
    samples = tmp_path / "samples"
    samples.mkdir()
    group = paste_faces(astronaut, [1.0, 0.7], (400, 600))
    (samples / "sample1.jpg").write_bytes(encode(group, "JPEG", quality=90))
    boxes = tmp_path / "boxes"
    results = run_bench(
        tmp_path,
        "survey_detectors.py",
        *("--att", str(att), "--lfw", str(lfw), "--samples", str(samples), "--boxes", str(boxes)),
        env={"FACERANK_CACHE_DIR": str(fetched_settings.cache_dir)},
    )
    assert results["att"]["images"] == 4
    assert results["att"]["ssd_found"] == 4
    assert {"haar_found", "ssd_more_than_one", "ssd_score_min", "ssd_score_p01"} <= set(
        results["att"]
    )
    assert results["att"]["ssd_box_eyes_from"] > 0
    assert len(results["att"]["ssd_box_left_eye"]) == 2
    assert len(results["att"]["ssd_eye_span_of_width"]) == 2
    assert set(results["non_face_highest_ssd_score"]) >= {"coffee", "chelsea"}
    assert set(results["samples"]["sample1.jpg"]) == {"haar", "ssd"}
    assert (boxes / "sample1.png").is_file()
    assert results["lfw_view1"]["images"] == 2
    assert {"haar_no_face", "ssd_no_face"} <= set(results["lfw_view1"])


def test_bench_openset(
    tmp_path: Path, lfw_faces: np.ndarray, pretrained_settings: Settings
) -> None:
    """Fourteen people with three photos (Haar finds them): seven enrolled with two rows each,
    so the gallery has the impostor similarities the tail fit needs (at least 50). One
    person with two photos and one with six are outside the 3-5 photos the script takes."""
    images = lfw_people(tmp_path / "data" / "lfw_view1" / "images", lfw_faces, 14, 3)
    for name, photos in (("Zz_Two", 2), ("Zz_Six", 6)):
        (images / name).mkdir()
        for n in range(1, photos + 1):
            shutil.copy(
                images / "Person_00" / "Person_00_0001.jpg", images / name / f"{name}_{n:04d}.jpg"
            )
    env = {
        "FACERANK_CACHE_DIR": str(pretrained_settings.cache_dir),
        "FACERANK_BENCH_DATA": str(tmp_path / "data"),
    }
    results = run_bench(tmp_path, "bench_openset.py", "--far", "0.05", env=env)
    assert results["gallery_identities"] == 7
    assert results["gallery_faces"] == 14
    assert results["enrolled_queries"] == results["stranger_queries"] == 7
    assert set(results["fits"]) == {"moments (before)", "maximum likelihood (now)"}
    for fit in results["fits"].values():
        assert 0.0 < fit["threshold"] <= 0.4
        assert 0.0 <= fit["identification_accuracy"] <= 1.0
        assert 0.0 <= fit["stranger_false_match_rate"] <= 1.0
        assert 0 <= fit["false_matches"] <= 7


def test_bench_identify(
    tmp_path: Path, lfw_faces: np.ndarray, pretrained_settings: Settings
) -> None:
    """Both data sets through a real ``facerank up`` (Haar, the pretrained descriptor): AT&T
    shrunk to four people with two photos, LFW to two people with six (the least it takes)."""
    data = tmp_path / "data"
    att = data / "att_faces"
    rng = np.random.default_rng(13)
    for p in range(4):
        (att / f"s{p + 1}").mkdir(parents=True)
        face = lfw_faces[DETECTABLE_FACES[p]]
        for n in (1, 2):
            grey = face_shot(face, rng, flip=False)[..., 0]
            (att / f"s{p + 1}" / f"{n:02d}.pgm").write_bytes(encode(grey, "PPM"))
    lfw_people(data / "lfw_view1" / "images", lfw_faces, people=2, photos=6)
    env = {
        "FACERANK_CACHE_DIR": str(pretrained_settings.cache_dir),
        "FACERANK_BENCH_DATA": str(data),
    }
    results = run_bench(
        tmp_path,
        "bench_identify.py",
        *("--att-people", "4", "--att-photos", "2", "--latency-photos", "3"),
        env=env,
    )
    att_figures, lfw_figures = results["results"]
    assert (att_figures["dataset"], lfw_figures["dataset"]) == ("att", "lfw")
    assert (att_figures["enrolled_photos"], att_figures["queries"]) == (2, 4)
    assert (lfw_figures["enrolled_photos"], lfw_figures["queries"]) == (3, 6)
    for figures in (att_figures, lfw_figures):
        assert figures["enrolled_records"] == figures["enrolled_photos"]
        assert figures["latency_photos"] == 3
        assert 0 < figures["latency_p50_s"] <= figures["latency_p95_s"]
        assert figures["unknown_faces"] >= figures["unknown_groups"] > 0
        assert {"group_pairwise_precision", "group_pairwise_recall"} <= set(figures)
        assert 0.0 <= figures["identification_accuracy"] <= 1.0
        assert figures["stranger_false_match_rate"] is not None
        assert len(figures["thresholds"]) == 2
        assert len(figures["curve"]) == 21


def test_bench_gallery_scale(tmp_path: Path, pretrained_settings: Settings) -> None:
    """Every section at toy sizes: on the folder store a gallery with records (today's code
    beside it) and one index only, on S3 (moto) index only; the approximate search and the
    re-embedding rate (lbp-v0, the cheap model: the code path is the model's own). LanceDB
    (``--lancedb``) is a measurement against an engine the product does not depend on, so
    neither does the suite: it needs ``pip install lancedb`` and is left out here."""
    results = run_bench(
        tmp_path,
        "bench_gallery_scale.py",
        *("--sizes", "60", "--stores", "folder,s3", "--records", "30", "--s3-records", "0"),
        *("--photos", "1", "--enroll-at", "20"),
        *("--reembed", "3", "--reembed-models", "lbp-v0"),
        env={"FACERANK_CACHE_DIR": str(pretrained_settings.cache_dir)},
    )
    rows = {(row["store"], row["faces"]): row for row in results["scale"]}
    assert set(rows) == {("folder", 30), ("folder", 60), ("s3", 60)}
    assert "today" in rows["folder", 30]
    assert "today" not in rows["folder", 60]
    for row in rows.values():
        new = row["new"]
        assert new["enrollment_served"]
        assert new["removal_served"]
        assert new["queries"]["same_answers"]
        assert {"cold_start_s", "rss_mb", "idle_poll_ms"} <= set(new)
    cost = results["enroll_cost"]
    assert cost["model"] == "dlib-r34-v1"
    assert {"folder_new_ratio", "folder_today_ratio", "s3_new_ratio", "s3_today_ratio"} <= set(cost)
    assert results["enroll_at_scale"]["indexed"] == 20
    assert results["enroll_at_scale"]["ratio"] > 0
    assert 0.0 <= results["approximate"]["recall_at_10"] <= 1.0
    assert "lancedb" not in results
    reembed = results["reembed"]
    assert reembed["records"] == 3
    assert {"lbp-v0_speedup", "lbp-v0_steady_speedup"} <= set(reembed)
