"""Atomic file and folder placement (facerank/files.py): whole or not at all, nothing left over."""

from __future__ import annotations

from pathlib import Path

import pytest

from facerank.files import atomic_folder, atomic_writer


def test_a_folder_appears_complete_and_readable(tmp_path: Path) -> None:
    target = tmp_path / "models" / "v1"
    with atomic_folder(target) as staging:
        (staging / "card.json").write_text("{}")
        assert not target.exists()  # nothing visible before the block ends
    assert (target / "card.json").read_text() == "{}"
    assert oct(target.stat().st_mode & 0o777) == "0o755"
    assert [p.name for p in target.parent.iterdir()] == ["v1"]


def test_a_failed_fill_leaves_nothing(tmp_path: Path) -> None:
    def fill() -> None:
        with atomic_folder(tmp_path / "v1") as staging:
            (staging / "half").write_text("x")
            raise RuntimeError("export failed")

    with pytest.raises(RuntimeError):
        fill()
    assert list(tmp_path.iterdir()) == []


def test_a_lost_race_keeps_the_winners_folder(tmp_path: Path) -> None:
    target = tmp_path / "v1"
    with atomic_folder(target) as staging:
        (staging / "mine").write_text("ours")
        target.mkdir()  # another process placed the same immutable folder meanwhile
        (target / "theirs").write_text("winner")
    assert [p.name for p in target.iterdir()] == ["theirs"]
    assert [p.name for p in tmp_path.iterdir()] == ["v1"]


def test_a_failed_write_keeps_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_bytes(b"old")

    def write() -> None:
        with atomic_writer(path) as handle:
            handle.write(b"new, half")
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write()
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]
