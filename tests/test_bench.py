"""Every script under ``bench/`` runs, at tiny sizes, so none can rot unnoticed.

Each runs as a user runs it (``python bench/<script>.py``), from a copy of ``bench/`` in a
scratch folder so the committed ``bench/results/*.json`` stay untouched, and must write its
results file with the figures the README quotes. The sizes prove the code paths, not speed:
no figure from here means anything (``bench/results`` holds the real runs). Marked ``bench``:
``-m "not bench"`` leaves them out of a quick run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from facerank.settings import Settings
from tests.plugins.enroller import lfw_photo
from tests.plugins.faces import encode, variant

pytestmark = [pytest.mark.slow, pytest.mark.bench]

ROOT = Path(__file__).resolve().parent.parent


def run_bench(
    tmp_path: Path, script: str, *args: str, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """Run ``bench/<script>`` from a scratch copy; the JSON it wrote (the only one)."""
    copy = tmp_path / "checkout"
    shutil.copytree(ROOT / "bench", copy / "bench", ignore=shutil.ignore_patterns("results"))
    for shared in ("tests", "pyproject.toml"):  # bench/fuzz.py runs tests from its checkout
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


def face_folders(root: Path, lfw_faces: np.ndarray, people: int, photos: int) -> Path:
    """``root/s1 ... s<people>/<n>.jpg``: the AT&T layout, with LFW faces Haar finds."""
    rng = np.random.default_rng(3)
    for p in range(people):
        folder = root / f"s{p + 1}"
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
    dataset = face_folders(tmp_path / "faces", lfw_faces, people=4, photos=3)
    env = {"FACERANK_CACHE_DIR": str(pretrained_settings.cache_dir)}
    results = run_bench(
        tmp_path, "bench_alignment.py", "--dataset", str(dataset), "--repeat", "2", env=env
    )
    assert set(results["accuracy"]) == {"box", "eyes", "landmarks"}
    assert results["cost"]["landmarks_over_detect"]["repeats"] == 2


def test_finetune_att(tmp_path: Path, lfw_faces: np.ndarray, pretrained_settings: Settings) -> None:
    # The script trains on s1-s30 and holds out the rest: at least two unseen people must
    # keep a face Haar finds.
    dataset = face_folders(tmp_path / "att", lfw_faces, people=36, photos=7)
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
    assert set(results["fine_tuned"]) == {"semihard"}
