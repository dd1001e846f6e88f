"""Running ``bench/`` scripts from tests, at tiny sizes, so none can rot unnoticed.

Each runs as a user runs it (``python bench/<script>.py``), from a copy of ``bench/`` in a
scratch folder so the committed ``bench/results/*.json`` stay untouched, and must write its
results file with the figures the README quotes. The sizes prove the code paths, not speed:
no figure from here means anything (``bench/results`` holds the real runs). Scripts that read
development data (``FACERANK_BENCH_DATA``, AT&T's and LFW's layouts) get a generated stand-in
folder from their test, never ``/work/shared``; those that need models get the session's
converted caches (``tests/plugins/pretrained.py``) through ``FACERANK_CACHE_DIR``.

The smokes are two modules, ``tests/test_bench.py`` (models and experiments) and
``tests/test_bench_system.py`` (the running system), of about the same length: pytest-xdist
hands out whole modules, and one module of all of them, handed out late (as in a reversed
run), would keep one worker busy long after the other had finished. Every script has its
test in one of them but the two helpers, covered through their users: ``predict_server.py``
runs as ``bench_predict.py``'s servers (both searches, its bench embedder included) and lends
``bench_gallery_scale.py`` its synthetic gallery; ``sidebyside.py``'s ``Ratio`` and
``time_pair`` feed ``bench_predict.py``, ``bench_alignment.py``, ``bench_grpc_startup.py`` and
``bench_training.py``. Marked ``bench``: ``-m "not bench"`` leaves them out of a quick run.
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

from facerank.settings import Settings
from tests.plugins.enroller import lfw_photo
from tests.plugins.faces import DETECTABLE_FACES, encode, face_shot, variant

ROOT = Path(__file__).resolve().parent.parent.parent


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
