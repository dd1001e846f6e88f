"""The ``bench/`` scripts that measure the running system run, at tiny sizes.

How they run, and which script is tested where: ``tests/plugins/bench.py``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from facerank.settings import Settings
from tests.plugins.bench import lfw_people, run_bench
from tests.plugins.faces import DETECTABLE_FACES, encode, face_shot

pytestmark = [pytest.mark.slow, pytest.mark.bench]


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


def test_bench_fuzz(tmp_path: Path) -> None:
    results = run_bench(tmp_path, "fuzz.py", "--minutes", "0.001", "--examples", "3")
    assert not results["failed"]
    assert results["examples"] > 0


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
