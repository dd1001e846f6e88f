"""``facerank eval --pairs`` as a real subprocess, on a generated LFW-style folder: the
side-by-side table, the protocol each run states, the report files, and bad pairs input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.plugins.cli import run_facerank as facerank
from tests.test_pairs import (
    MISSED_PAIRS,
    MISSING,
    NOT_A_FACE,
    TEST_MATCHED,
    TEST_MISMATCHED,
    TRAIN_MATCHED,
    TRAIN_MISMATCHED,
    pairs_text,
    write_lfw_folder,
)


@pytest.fixture(scope="module")
def lfw(
    tmp_path_factory: pytest.TempPathFactory, lfw_faces: np.ndarray, astronaut: np.ndarray
) -> Path:
    """``lfw/images/<name>/...`` and, beside it, ``test.txt``, ``train.txt`` and ``folds.txt``."""
    root = tmp_path_factory.mktemp("lfw")
    write_lfw_folder(root / "images", lfw_faces, astronaut)
    (root / "test.txt").write_text(pairs_text(TEST_MATCHED, TEST_MISMATCHED + MISSED_PAIRS))
    (root / "train.txt").write_text(pairs_text(TRAIN_MATCHED, TRAIN_MISMATCHED))
    matched, mismatched = TEST_MATCHED + TRAIN_MATCHED, TEST_MISMATCHED + TRAIN_MISMATCHED
    folds = [[*matched[3 * k : 3 * k + 3], *mismatched[3 * k : 3 * k + 3]] for k in range(4)]
    (root / "folds.txt").write_text(
        "4\t3\n" + "".join(f"{line}\n" for fold in folds for line in fold)
    )
    return root


def test_train_and_test_side_by_side(lfw: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    args = ["--pairs", str(lfw / "test.txt"), "--pairs-train", str(lfw / "train.txt")]
    args += ["--embedder", "lbp-v0", "--embedder", "lbph", "--align", "box", "--align", "eyes"]
    args += ["--detector", "haar", "--out", str(out), str(lfw / "images")]
    result = facerank("eval", *args, data_dir=tmp_path)
    table = result.stdout.splitlines()
    assert table[0] == (
        "| detector | align | embedder | accuracy (missed face = wrong) | accuracy, both faces "
        "found | test images with no face | threshold | TAR at FAR 0.01, found pairs "
        "(threshold) | TAR at FAR 0.001, found pairs (threshold) | embed faces/s |"
    )
    rows = [row.split(" | ") for row in table[2:]]
    assert [row[:3] for row in rows] == [
        ["| haar", "box", "lbp-v0"],
        ["| haar", "box", "lbph"],
        ["| haar", "eyes", "lbp-v0"],
        ["| haar", "eyes", "lbph"],
    ]
    assert {row[5] for row in rows} == {"2/16 (12.5%)"}  # the wall and the missing file
    markdown = (out / "report.md").read_text(encoding="utf-8")
    assert markdown.startswith("# facerank eval --pairs: test.txt\n\n" + "\n".join(table[:2]))
    assert "- Threshold: fitted on train.txt.\n" in markdown
    assert "(FACERANK_ENROLL_FACES=primary)" in markdown
    assert f"- {NOT_A_FACE}/{NOT_A_FACE}_0001.jpg\n- {MISSING}/{MISSING}_0001.jpg\n" in markdown
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["protocol"]["test"]["pairs"] == 17
    assert report["protocol"]["train"]["matched"] == len(TRAIN_MATCHED)
    [box, eyes] = report["detections"]
    assert [(box["detector"], box["align"]), (eyes["detector"], eyes["align"])] == [
        ("haar", "box"),
        ("haar", "eyes"),
    ]
    for detection in (box, eyes):
        assert detection["test_images_without_face"] == [
            f"{NOT_A_FACE}/{NOT_A_FACE}_0001.jpg",
            f"{MISSING}/{MISSING}_0001.jpg",
        ]
    assert [u["code"] for u in box["unreadable"]] == ["unreadable_file"]
    for entry in report["results"]:
        v = entry["verification"]
        assert (v["pairs"], v["found_pairs"]) == (17, 15)
        assert v["accuracy"] == pytest.approx(v["folds"][0]["correct"] / 17)
        assert v["accuracy"] < v["found_accuracy"]
    assert (out / "roc.png").read_bytes()[:4] == b"\x89PNG"


def test_without_training_pairs_the_models_own_threshold_is_said(lfw: Path, tmp_path: Path) -> None:
    args = ["--pairs", str(lfw / "test.txt"), "--embedder", "lbp-v0", "--embedder", "lbph"]
    args += ["--align", "box", "--json", "--out", str(tmp_path / "out"), str(lfw / "images")]
    report = json.loads(facerank("eval", *args, data_dir=tmp_path).stdout)
    lbp, lbph = (entry["verification"] for entry in report["results"])
    assert lbp["threshold_source"] == "the model's own calibrated match threshold"
    assert lbph["threshold_source"].startswith("none: lbph has no calibrated threshold")
    assert lbph["accuracy"] is None
    markdown = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    assert "- Threshold: none: lbph has no calibrated threshold" in markdown
    assert "the model&#x27;s own calibrated match threshold" not in markdown  # not escaped
    assert "the model's own calibrated match threshold" in markdown


def test_a_fold_file_reports_mean_and_deviation(lfw: Path, tmp_path: Path) -> None:
    """With --face centre, the face nearest the centre of each image, and the report says so."""
    args = ["--pairs", str(lfw / "folds.txt"), "--embedder", "lbp-v0", "--align", "box"]
    args += ["--face", "centre"]
    result = facerank(
        "eval", *args, "--out", str(tmp_path / "out"), str(lfw / "images"), data_dir=tmp_path
    )
    [row] = [line.split(" | ") for line in result.stdout.splitlines()[2:]]
    assert " +- " in row[3]
    assert " +- " in row[4]
    markdown = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    assert "- Threshold: fitted on the other 3 folds, fold by fold.\n" in markdown
    assert "| detector | align | embedder | fold 1 | fold 2 | fold 3 | fold 4 |" in markdown
    assert "- Each image's face nearest the image centre is compared (--face centre)" in markdown
    report = json.loads((tmp_path / "out" / "report.json").read_text(encoding="utf-8"))
    assert report["protocol"]["faces"] == "centre"


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("malformed", "invalid_pairs_file: {bad} line 3: expected a mismatched pair"),
        ("folds+train", "invalid_config: --pairs {folds} has 4 folds"),
        ("no-images", "invalid_config: IMAGES_DIR {missing} is not a folder"),
        ("missing-pairs", "invalid_pairs_file: cannot read pairs file {missing}"),
    ],
)
def test_bad_pairs_input_exits_2(lfw: Path, tmp_path: Path, case: str, message: str) -> None:
    bad, missing, folds = tmp_path / "bad.txt", tmp_path / "missing", lfw / "folds.txt"
    bad.write_text("1 1\nA 1 2\nA 1 2\n")
    images = str(lfw / "images")
    args = {
        "malformed": ["--pairs", str(bad), images],
        "folds+train": ["--pairs", str(folds), "--pairs-train", str(lfw / "train.txt"), images],
        "no-images": ["--pairs", str(lfw / "test.txt"), str(missing)],
        "missing-pairs": ["--pairs", str(missing), images],
    }[case]
    result = facerank("eval", *args, "--embedder", "lbp-v0", data_dir=tmp_path, check=False)
    assert result.returncode == 2
    assert message.format(bad=bad, folds=folds, missing=missing) in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
