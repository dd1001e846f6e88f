"""``facerank eval`` as a real subprocess: the table, the report files, and bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.plugins.cli import run_facerank as facerank
from tests.test_evaluation import write_face_dataset

FACES = (0, 1, 3, 5)
JSON_ARGS = ("--json", "--threshold", "0.5", "--progress")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory, lfw_faces: np.ndarray) -> Path:
    return write_face_dataset(tmp_path_factory.mktemp("eval") / "sample", lfw_faces, faces=FACES)


def test_compares_embedders_and_alignments_side_by_side(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    args = ["--embedder", "lbp-v0", "--embedder", "lbph", "--align", "eyes", "--align", "box"]
    args += ["--detector", "haar"]
    result = facerank("eval", str(dataset), *args, "--out", str(out), data_dir=tmp_path)
    table = result.stdout.splitlines()
    assert table[0].startswith("| embedder | align | detector | faces | rank-1 | rank-5 |")
    assert [row.split(" | ")[:4] for row in table[2:]] == [
        ["| lbp-v0", "eyes", "haar", "16/16"],
        ["| lbph", "eyes", "haar", "16/16"],
        ["| lbp-v0", "box", "haar", "16/16"],
        ["| lbph", "box", "haar", "16/16"],
    ]
    assert (
        (out / "report.md")
        .read_text(encoding="utf-8")
        .startswith("# facerank eval: sample\n\n" + "\n".join(table[:2]))
    )
    assert (out / "roc.png").stat().st_size > 0
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert [(r["embedder"], r["align"]) for r in report["results"]] == [
        ("lbp-v0", "eyes"),
        ("lbph", "eyes"),
        ("lbp-v0", "box"),
        ("lbph", "box"),
    ]
    assert str(out / "report.md") in result.stderr


def test_json_threshold_and_default_embedders(dataset: Path, tmp_path: Path) -> None:
    """Without --embedder: lbp-v0, lbph, and the pretrained descriptor or a note saying why
    not; without --out: a timestamped folder in the working directory."""
    result = subprocess.run(
        [sys.executable, "-m", "facerank.cli.main", "eval", str(dataset), *JSON_ARGS],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "FACERANK_DATA_DIR": str(tmp_path / "data")},
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["threshold"] == 0.5
    embedders = [r["embedder"] for r in report["results"]]
    assert embedders[:2] == ["lbp-v0", "lbph"]
    if len(embedders) == 2:
        assert "dlib-r34-v1 left out: " in result.stderr
        assert any(note.startswith("dlib-r34-v1 left out") for note in report["notes"])
    else:
        assert report["results"][2]["model_version"] == "dlib-r34-v1"
    assert "img/s" in result.stderr  # the progress bar
    [folder] = tmp_path.glob("eval-sample-*")
    assert sorted(p.name for p in folder.iterdir()) == ["report.json", "report.md", "roc.png"]


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing", "invalid_dataset: dataset {root} does not exist"),
        ("empty", "invalid_dataset: no files in identity folders under {root}"),
        ("not-images", "evaluation_failed: no face found in any of the 0 readable images"),
        (
            "hostile",
            "<identity>/<image> (skipped, not identity folders: 2)",
        ),
    ],
)
def test_bad_datasets_exit_2_with_the_reason(tmp_path: Path, case: str, message: str) -> None:
    root = tmp_path / "set"
    if case != "missing":
        root.mkdir()
    if case == "not-images":
        (root / "alice").mkdir()
        (root / "alice" / "a.jpg").write_text("not a photo")
        (root / "alice" / "b.png").write_bytes(b"")
    if case == "hostile":
        for name in ["..", "$(touch pwned)", "rm -rf *"]:  # ".." is hidden: ignored
            (root / f"{name}x").mkdir()
            (root / f"{name}x" / "1.jpg").write_bytes(b"x")
    result = facerank("eval", str(root), "--embedder", "lbp-v0", data_dir=tmp_path, check=False)
    assert result.returncode == 2
    assert message.format(root=root) in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--embedder", "no-such-model"], "model_load_failed: unknown model 'no-such-model'"),
        (["--threshold", "3"], "invalid_config: FACERANK_MATCH_THRESHOLD must be in (0, 2]"),
        (["--out", "{file}"], "invalid_config: --out {file} exists and is not a folder"),
        (["--align", "nose"], "argument --align: invalid choice: 'nose'"),
        (["--detector", "hog"], "argument --detector: invalid choice: 'hog'"),
        (["--pairs-train", "{file}"], "invalid_config: --pairs-train needs --pairs"),
        (["--face", "centre"], "invalid_config: --face applies to --pairs"),
    ],
)
def test_bad_options_exit_2(dataset: Path, tmp_path: Path, args: list[str], message: str) -> None:
    file = tmp_path / "taken"
    file.write_text("")
    args = [arg.format(file=file) for arg in args]
    result = facerank("eval", str(dataset), *args, data_dir=tmp_path, check=False)
    assert result.returncode == 2
    assert message.format(file=file) in result.stderr
    assert "Traceback" not in result.stderr
