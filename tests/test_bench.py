"""The ``bench/`` scripts that measure models and experiments run, at tiny sizes.

How they run, and which script is tested where: ``tests/plugins/bench.py``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facerank.settings import Settings
from tests.plugins.bench import face_folders, lfw_people, merged_cache, run_bench
from tests.plugins.faces import encode, paste_faces, variant
from tests.plugins.pretrained import EXPORTED_DESCRIPTOR

pytestmark = [pytest.mark.slow, pytest.mark.bench]


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
        "dlib68-largest",
        "dlib5",
        "dlib68-verified",
        "dlib5-verified",
        "dlib68-no-second-opinion",
        "dlib68-no-rescue",
    }
    assert all(0.0 <= v["accuracy"] <= 1.0 for v in results["variants"].values())


def test_bench_training(tmp_path: Path) -> None:
    results = run_bench(tmp_path, "bench_training.py", "--repeat", "1", "--steps", "2")
    scratch = results["scratch_112"]
    assert [len(scratch["samples"][k]) for k in ("1", "2")] == [1, 1]
    assert scratch["ratio_two_to_one_per_repeat"]["repeats"] == 1


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
