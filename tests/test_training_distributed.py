"""Real multi-worker training: worker processes on loopback with real gRPC collectives.

Each test starts ``python -m training.worker`` processes the way the local launcher does in
production (``TF_CONFIG`` naming every worker). Tiny sizes keep them fast: the scratch
backbone at 48 px on LFW face crops, a 32-D embedding, a few dozen steps.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import numpy as np
import psutil
import pytest

from facerank.embedding import load_embedder
from facerank.evaluation.metrics import evaluate_embeddings
from tests.plugins.faces import labelled_chips
from training.backbones import backbone_chip
from training.config import TrainConfig
from training.data import read_dataset, split_by_identity, write_dataset
from training.launcher import LocalTrainingLauncher, run_local
from training.result import RunFailed, RunSucceeded
from training.rundir import RunDir

pytestmark = pytest.mark.slow
pytest.importorskip("tensorflow")

IDENTITIES, PER_IDENTITY, SIZE = 12, 5, 48


def prepare(shared: Path, lfw_faces: np.ndarray, run_id: str, **overrides: object) -> RunDir:
    config = TrainConfig(
        **{  # type: ignore[arg-type]
            "run_id": run_id,
            "version": f"ft-test-{run_id}",
            "backbone": "scratch",
            "image_size": SIZE,
            "workers": 2,
            "epochs": 2,
            "steps_per_epoch": 6,
            "identities_per_batch": 4,
            "faces_per_identity": 3,
            "learning_rate": 1e-3,
            "embedding_dim": 32,
            "holdout_fraction": 0.25,
            "baseline": "lbp-v0",
            "threshold": 0.6,
            "checkpoint_every": 4,
            "log_every": 2,
            "collective_timeout_s": 60.0,
            "startup_timeout_s": 60.0,
            **overrides,
        }
    )
    run = RunDir.create(shared, config)
    chips, labels = labelled_chips(lfw_faces[:IDENTITIES], SIZE, PER_IDENTITY)
    write_dataset(run, backbone_chip(config), chips, [f"person-{i:02d}" for i in labels])
    return run


def test_two_workers_train_and_export_a_model_facerank_loads(
    tmp_path: Path, lfw_faces: np.ndarray
) -> None:
    """ArcFace (imprinted, warmed up) plus batch-hard triplets: every part of a step."""
    run = prepare(tmp_path, lfw_faces, "two", loss="arcface+batchhard", warmup_steps=2)
    seen: list[dict[str, object]] = []
    outcome = run_local(run.config_path, 2, deadline_s=150, on_progress=seen.append)
    assert outcome.status == "succeeded", _logs(run)
    assert outcome.attempts == 1
    result = outcome.result
    assert isinstance(result, RunSucceeded)
    assert result.training["workers"] == 2
    assert result.training["resumed_from"] == 0
    steps = [r["step"] for r in seen if r["event"] == "step"]
    assert steps == [2, 4, 6, 8, 10, 12]
    assert [r["event"] for r in seen][-2:] == ["exported", "finished"]
    # only the chief checkpoints; the other worker's scratch copies are gone
    assert (run.checkpoints_dir / "checkpoint").is_file()
    assert not any(run.path.joinpath("workers").glob("*/ckpt-*"))

    embedder = load_embedder(result.export_dir)
    assert embedder.model_version == "ft-test-two"
    assert embedder.dim == 32
    dataset = read_dataset(run)
    assert embedder.chip == dataset.chip
    # the exported model is the one that was scored: same metrics on the held-out faces
    split = split_by_identity(dataset.labels, 0.25, 0)
    faces = split.faces(dataset.labels, split.heldout)
    assert result.split["heldout_faces"] == len(faces) == 3 * PER_IDENTITY
    metrics = evaluate_embeddings(embedder.embed(dataset.chips[faces]), dataset.labels[faces])
    assert metrics.rank1 == pytest.approx(result.candidate["rank1"])
    assert metrics.best.threshold == pytest.approx(result.candidate["best"]["threshold"], 1e-4)
    assert result.baseline_version == "lbp-v0"
    assert result.baseline["faces"] == len(faces)


def test_a_killed_worker_is_restarted_and_the_run_resumes_from_its_checkpoint(
    tmp_path: Path, lfw_faces: np.ndarray
) -> None:
    run = prepare(tmp_path, lfw_faces, "resume", epochs=1, steps_per_epoch=80, checkpoint_every=10)
    launcher = LocalTrainingLauncher(tmp_path, max_restarts=1)
    launcher.start("resume", 2, str(run.config_path), deadline_s=150)
    first_checkpoint = _wait_for(
        lambda: next((r for r in run.read_progress() if r["event"] == "checkpoint"), None), 90
    )
    worker_processes()[1].kill()  # SIGKILL the non-chief worker mid-run
    killed_at = max(r["step"] for r in run.read_progress() if r["event"] == "checkpoint")
    assert launcher.wait("resume", timeout=150) == "succeeded", _logs(run)
    assert launcher.attempts("resume") == 2
    records = run.read_progress()
    starts = [r for r in records if r["event"] == "start"]
    assert len(starts) == 2
    assert starts[0]["step"] == 0
    resumed = starts[1]["step"]
    assert resumed >= killed_at >= first_checkpoint["step"] == 10
    assert resumed % 10 == 0  # a checkpoint step, not a fresh start
    result = run.read_result()
    assert isinstance(result, RunSucceeded)
    assert result.training["resumed_from"] == resumed
    assert result.training["steps"] == 80
    assert max(r["step"] for r in records if r["event"] == "step") == 80


def test_a_worker_whose_peer_never_starts_exits_within_its_deadline(
    tmp_path: Path, lfw_faces: np.ndarray, free_port: Callable[[], int]
) -> None:
    run = prepare(tmp_path, lfw_faces, "alone", startup_timeout_s=6.0)
    tf_config = {
        "cluster": {"worker": [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]},
        "task": {"type": "worker", "index": 0},
    }
    env = {
        **os.environ,
        "TF_CONFIG": json.dumps(tf_config),
        "FACERANK_TRAIN_CONFIG": str(run.config_path),
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    done = subprocess.run(
        [sys.executable, "-m", "training.worker"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,  # importing TensorFlow on a loaded machine, then the 6 s deadline
        check=False,
    )
    ended = datetime.now()  # the worker logs local time
    assert done.returncode == 1  # retryable: the peer may come up next time
    armed = next(line for line in done.stderr.splitlines() if "forming, within 6 s" in line)
    assert "the cluster (127.0.0.1:" in armed
    # The deadline counts from the arming, which comes after TensorFlow's import: the stack
    # the watchdog dumps is the strategy waiting for its peer, never an import.
    assert "MultiWorkerMirroredStrategy" in done.stderr or "collective_all_reduce" in done.stderr
    assert "importlib._bootstrap" not in done.stderr
    waited = (ended - datetime.strptime(armed[:23], "%Y-%m-%d %H:%M:%S,%f")).total_seconds()
    assert waited >= 6.0 - 0.1  # not before its deadline
    assert run.read_result() is None  # not a verdict: a retry may still succeed


def test_the_launcher_fails_a_run_at_its_deadline(tmp_path: Path, lfw_faces: np.ndarray) -> None:
    """A run far too long for its deadline (1,000 epochs, 5 s) fails at the deadline with its
    workers killed. 5 s, not 1: the workers are listed after ``start`` returns, and on a
    loaded machine a 1 s deadline had already killed one of them by then."""
    run = prepare(tmp_path, lfw_faces, "late", epochs=1000)
    launcher = LocalTrainingLauncher(tmp_path)
    launcher.start("late", 2, str(run.config_path), deadline_s=5)
    pids = [process.pid for process in worker_processes().values()]
    assert len(pids) == 2
    launcher.start("late", 2, str(run.config_path), deadline_s=5)  # idempotent
    assert launcher.status("late") == "pending"  # TensorFlow is still importing
    assert launcher.wait("late", timeout=30) == "failed"
    result = run.read_result()
    assert isinstance(result, RunFailed)
    assert result.code == "deadline_exceeded"
    for pid in pids:  # killed and reaped
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_a_permanent_failure_is_recorded_and_not_retried(
    tmp_path: Path, lfw_faces: np.ndarray
) -> None:
    """Too few identities for the batch: the chief says why, the launcher does not retry."""
    run = prepare(tmp_path, lfw_faces, "bad", identities_per_batch=20, workers=2)
    outcome = run_local(run.config_path, 2, deadline_s=60)
    assert outcome.status == "failed"
    assert outcome.attempts == 1
    assert isinstance(outcome.result, RunFailed)
    assert outcome.result.code == "invalid_training_data"
    assert "identities_per_batch" in outcome.result.message


def worker_processes() -> dict[int, psutil.Process]:
    """The training workers this test started, by cluster index, as the OS lists them."""
    workers = {}
    for child in psutil.Process().children():
        try:
            if child.cmdline()[-2:] == ["-m", "training.worker"]:
                workers[json.loads(child.environ()["TF_CONFIG"])["task"]["index"]] = child
        except psutil.Error:
            continue  # ended meanwhile
    return workers


def _wait_for(probe: object, timeout: float) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = probe()  # type: ignore[operator]
        if found is not None:
            return found
        time.sleep(0.05)
    raise AssertionError("timed out waiting for the run")


def _logs(run: RunDir) -> str:
    return "\n".join(p.read_text()[-3000:] for p in sorted(run.logs_dir.glob("*.log")))
