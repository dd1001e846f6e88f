"""``facerank up`` end to end: real processes, a real folder, real events.

Drop a photo into the faces folder and it is enrolled; delete it and every trace goes; stop
with Ctrl-C and start again on the same data without loss or duplicates. This is the
embedded default exactly as a user runs it, with free loopback ports so tests can run anywhere.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from kserve.inference_client import InferenceGRPCClient

from facerank.descriptor.pretrained import PRETRAINED_VERSION
from facerank.gallery import Gallery
from facerank.settings import Settings
from facerank.storage import FolderStore
from tests.plugins.cli import run_facerank
from tests.plugins.faces import encode

READY = "facerank is up"


class Up:
    """A running ``facerank up`` whose output is collected line by line."""

    def __init__(self, data_dir: Path, env: dict[str, str]) -> None:
        self.env = {"FACERANK_DATA_DIR": str(data_dir), **env}
        env = {**os.environ, **self.env}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "facerank.cli.main", "up"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        threading.Thread(target=self._collect, daemon=True).start()

    def _collect(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)

    def output(self) -> str:
        return "".join(self.lines)

    def wait_for(self, condition: Callable[[], bool], what: str, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return
            if self.process.poll() is not None:
                pytest.fail(
                    f"facerank up exited early ({self.process.returncode}):\n{self.output()}"
                )
            time.sleep(0.2)
        pytest.fail(f"timed out waiting for {what}:\n{self.output()}")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        return self.process.wait(timeout=60)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def start_up(data_dir: Path, free_port: Callable[[], int]) -> Iterator[Callable[..., Up]]:
    names = ("BROKER", "SOURCE", "ENROLL", "IDENTIFY", "NOTIFY", "RETRAIN", "PREDICTOR", "WEB")
    names += ("PREDICTOR_GRPC",)
    env = {f"FACERANK_{name}_PORT": str(free_port()) for name in names}
    env["FACERANK_RECONCILE_INTERVAL"] = "1"  # many reconcile passes in a short test
    running: list[Up] = []

    def start(**extra_env: str) -> Up:
        up = Up(data_dir, {**env, **extra_env})
        running.append(up)
        up.wait_for(lambda: READY in up.output(), "facerank up to be ready")
        return up

    yield start
    for up in running:
        up.stop()


def identities(data_dir: Path) -> dict[str, int]:
    return Gallery(FolderStore(data_dir / "buckets"), "gallery").identities()


def drop(data_dir: Path, key: str, data: bytes) -> Path:
    """Copy a file into the faces folder the way a user or a sync tool would."""
    path = data_dir / "buckets" / "faces" / key
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as file:
        file.write(data)
    return path


def another_shot(data_dir: Path, astronaut: np.ndarray) -> Path:
    """Another shot of the enrolled face: mirrored, darker, slightly cropped, outside the bucket."""
    shot = (astronaut[20:, ::-1].astype(np.float32) * 0.85).astype(np.uint8)
    path = data_dir.parent / "query.png"
    path.write_bytes(encode(shot))
    return path


def top_identity(photo: Path, env: dict[str, str]) -> str | None:
    """``facerank query --json`` as a user runs it; the top identity of the first face."""
    result = run_facerank(
        "query", str(photo), "--json", data_dir=Path(env["FACERANK_DATA_DIR"]), env=env, check=False
    )
    if result.returncode != 0:
        return None
    faces = json.loads(result.stdout)["faces"]
    return faces[0]["matches"][0]["identity"] if faces and faces[0]["matches"] else None


def grpc_model_ready(target: str) -> bool:
    async def ask() -> bool:
        async with InferenceGRPCClient(target, retries=0) as client:
            return bool(await client.is_model_ready("facerank"))

    return asyncio.run(ask())


def test_drop_enroll_delete_restart(
    start_up: Callable[[], Up], data_dir: Path, astronaut: np.ndarray
) -> None:
    up = start_up()
    photo = drop(data_dir, "eileen/1.jpg", encode(astronaut, "JPEG"))
    up.wait_for(lambda: identities(data_dir) == {"eileen": 1}, "eileen to be enrolled")

    # The predictor picks the new face up by itself and ranks it first for another shot of her.
    query = another_shot(data_dir, astronaut)
    up.wait_for(lambda: top_identity(query, up.env) == "eileen", "eileen to be the top match")
    table = run_facerank("query", str(query), data_dir=data_dir, env=up.env).stdout
    assert "model version: lbp-v0; 1 face(s)" in table
    assert table.splitlines()[3].split()[:2] == ["1", "eileen"]
    # gRPC is on by default: Open Inference Protocol clients reach the same model there.
    grpc_target = f"127.0.0.1:{up.env['FACERANK_PREDICTOR_GRPC_PORT']}"
    assert f"V2 over gRPC       {grpc_target}" in up.output()
    assert grpc_model_ready(grpc_target)

    drop(data_dir, "eileen/broken.jpg", b"\xff\xd8\xff not really a jpeg")
    drop(data_dir, "wall/1.png", encode(np.full((200, 200, 3), 90, np.uint8)))
    up.wait_for(lambda: "2 known rejected" in up.output(), "the source to learn both rejections")
    assert identities(data_dir) == {"eileen": 1}
    # Reconcile passes go on every second, but a rejected version is not sent again.
    sent = up.output().count("emitted dev.facerank.object.created.v1 subject='eileen/broken.jpg'")
    passes = up.output().count("reconcile pass:")
    up.wait_for(lambda: up.output().count("reconcile pass:") >= passes + 3, "3 more passes")
    assert (
        up.output().count("emitted dev.facerank.object.created.v1 subject='eileen/broken.jpg'")
        == sent
    )

    photo.unlink()
    up.wait_for(lambda: identities(data_dir) == {}, "eileen to be removed")
    gallery_files = [p for p in (data_dir / "buckets" / "gallery").rglob("*") if p.is_file()]
    assert gallery_files == []

    assert up.stop() == 0
    assert "facerank up: stopped" in up.output()

    # Photos dropped while facerank is down are found by the reconcile pass at start.
    drop(data_dir, "eileen/2.jpg", encode(astronaut[:, ::-1].copy(), "JPEG"))
    again = start_up()
    again.wait_for(lambda: identities(data_dir) == {"eileen": 1}, "reconcile after restart")
    assert again.stop() == 0


def test_a_fresh_gallery_enrolls_and_ranks_with_the_pretrained_descriptor(
    start_up: Callable[..., Up],
    data_dir: Path,
    astronaut: np.ndarray,
    fetched_settings: Settings,
) -> None:
    """What a fresh clone gets once setup converted the models: dlib-r34-v1 and the SSD
    detector, both named in replies."""
    up = start_up(FACERANK_CACHE_DIR=str(fetched_settings.cache_dir))
    drop(data_dir, "eileen/1.jpg", encode(astronaut, "JPEG"))
    up.wait_for(lambda: identities(data_dir) == {"eileen": 1}, "eileen to be enrolled")
    query = another_shot(data_dir, astronaut)
    up.wait_for(lambda: top_identity(query, up.env) == "eileen", "eileen to be the top match")
    table = run_facerank("query", str(query), data_dir=data_dir, env=up.env).stdout
    assert f"model version: {PRETRAINED_VERSION}; 1 face(s)" in table
    assert "detector ssd" in table
    assert up.stop() == 0
