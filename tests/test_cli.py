"""The ``facerank`` command line, run as a real process: detect, embed and up."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.plugins.cli import run_facerank as facerank
from tests.plugins.faces import ASTRONAUT_FACE_BOX, encode

BIN = Path(sys.executable).parent


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


@pytest.fixture
def bad_files(tmp_path: Path) -> dict[str, Path]:
    files = {
        "text": tmp_path / "notes.jpg",
        "blank": tmp_path / "blank.png",
        "missing": tmp_path / "missing.png",
    }
    files["text"].write_text("not a photo")
    files["blank"].write_bytes(encode(np.full((200, 200, 3), 90, np.uint8)))
    return files


def test_detect_reports_the_astronaut_face(astronaut_file: Path, tmp_path: Path) -> None:
    [record] = json_lines(facerank("detect", str(astronaut_file), data_dir=tmp_path).stdout)
    assert record["path"] == str(astronaut_file)
    assert (record["width"], record["height"]) == (512, 512)
    [face] = record["faces"]
    assert face["alignment"] == "eyes"
    assert face["detector"] == "haar"  # the test cache has no SSD
    assert face["confidence"] > 0.99
    assert all(abs(a - b) <= 8 for a, b in zip(face["box"], ASTRONAUT_FACE_BOX, strict=True))


def test_detect_reports_bad_files_and_exits_nonzero(
    astronaut_file: Path, bad_files: dict[str, Path], tmp_path: Path
) -> None:
    paths = [str(bad_files["text"]), str(astronaut_file), str(bad_files["missing"])]
    result = facerank("detect", *paths, data_dir=tmp_path, check=False)
    records = json_lines(result.stdout)
    assert result.returncode == 1
    assert [r["path"] for r in records] == paths
    assert records[0]["error"]["code"] == "not_an_image"
    assert len(records[1]["faces"]) == 1
    assert records[2]["error"]["code"] == "unreadable_file"


def test_embed_json_gives_unit_vector_and_typed_errors(
    astronaut_file: Path, bad_files: dict[str, Path], tmp_path: Path
) -> None:
    paths = [str(astronaut_file), str(bad_files["blank"]), str(bad_files["text"])]
    result = facerank("embed", "--json", *paths, data_dir=tmp_path, check=False)
    ok, no_face, not_image = json_lines(result.stdout)
    assert result.returncode == 1
    assert ok["model_version"] == "lbp-v0"
    assert ok["faces"] == 1
    assert len(ok["box"]) == 4
    assert np.linalg.norm(ok["embedding"]) == pytest.approx(1.0, abs=1e-5)
    assert no_face["error"]["code"] == "no_face"
    assert not_image["error"]["code"] == "not_an_image"


def test_embed_plain_output_is_tab_separated(astronaut_file: Path, tmp_path: Path) -> None:
    line = facerank("embed", str(astronaut_file), data_dir=tmp_path).stdout.strip()
    path, version, box, vector = line.split("\t")
    assert (path, version) == (str(astronaut_file), "lbp-v0")
    assert len(box.split(",")) == 4
    assert np.linalg.norm([float(v) for v in vector.split()]) == pytest.approx(1.0, abs=1e-4)


def test_embed_batches_many_images_in_order(
    astronaut: np.ndarray, bad_files: dict[str, Path], tmp_path: Path
) -> None:
    """More images than one batch, failures interleaved: order kept, equal inputs agree."""
    photo = tmp_path / "a.png"
    photo.write_bytes(encode(astronaut[::2, ::2].copy()))
    paths = [str(bad_files["text"]) if i % 9 == 4 else str(photo) for i in range(70)]
    result = facerank("embed", "--json", "--progress", *paths, data_dir=tmp_path, check=False)
    records = json_lines(result.stdout)
    assert [r["path"] for r in records] == paths
    vectors = [r["embedding"] for r in records if "embedding" in r]
    assert len(vectors) == 70 - sum(1 for i in range(70) if i % 9 == 4)
    assert all(v == vectors[0] for v in vectors)
    assert "img" in result.stderr  # the progress bar went to stderr, stdout stayed JSON


def test_up_reports_an_invalid_setting_clearly(tmp_path: Path) -> None:
    result = facerank("up", data_dir=tmp_path, env={"FACERANK_STORE": "ftp"}, check=False)
    assert result.returncode == 2
    assert "invalid_config: FACERANK_STORE must be" in result.stderr


def test_console_script_is_installed() -> None:
    script = BIN / "facerank"
    if not script.exists():
        pytest.skip(f"facerank is not installed into {BIN} (run through `make test`)")
    result = subprocess.run([str(script), "--version"], capture_output=True, text=True, check=True)
    assert result.stdout.startswith("facerank ")


def test_query_without_a_predictor_says_so(astronaut_file: Path, tmp_path: Path) -> None:
    result = facerank(
        "query", str(astronaut_file), "--url", "http://127.0.0.1:9", data_dir=tmp_path, check=False
    )
    assert result.returncode == 2
    assert "predictor_unavailable: no predictor at http://127.0.0.1:9" in result.stderr
