"""The run configuration, the run directory, the cluster a worker derives, the backbones."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from facerank.faces.align import DLIB_CHIP_150
from facerank.settings import Settings
from training.backbones import backbone_chip
from training.cluster import cluster_from_env
from training.config import TrainConfig, default_version
from training.errors import (
    BackboneUnavailableError,
    ClusterConfigError,
    RunNotFoundError,
    TrainingConfigError,
)
from training.result import RunFailed, RunSucceeded
from training.rundir import ProgressLog, RunDir


def config(**overrides: object) -> TrainConfig:
    return TrainConfig(run_id="r1", version="ft-20260101-r1", **overrides)  # type: ignore[arg-type]


def test_config_round_trips_through_json(tmp_path: Path) -> None:
    original = config(backbone="scratch", image_size=64, loss="arcface+batchhard", workers=2)
    run = RunDir.create(tmp_path, original)
    assert run.path == tmp_path / "runs" / "r1"
    assert run.read_config() == original
    assert TrainConfig.loads(json.dumps(original.to_json())) == original


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"epochs": "3"}, "wrong type"),
        ({"epochs": True}, "wrong type"),
        ({"learning_rate": -1.0}, "learning_rate must be positive"),
        ({"loss": "contrastive"}, "loss must be one of"),
        ({"backbone": "pretrained", "image_size": 112}, "150 px"),
        ({"faces_per_identity": 1}, "at least 2"),
        ({"identities_per_batch": 6, "workers": 4}, "split evenly"),
        ({"identities_per_batch": 2, "workers": 2}, "two identities per worker"),
        ({"warmup_steps": 500}, "must leave steps"),
        ({"holdout_fraction": 1.0}, "holdout_fraction"),
        ({"run_id": "../escape"}, "invalid run id"),
        ({"version": "no spaces"}, "invalid model version"),
    ],
)
def test_invalid_configs_are_refused(change: dict[str, object], message: str) -> None:
    data = {**config().to_json(), **change}
    with pytest.raises(TrainingConfigError, match=message):
        TrainConfig.from_json(data)


def test_config_json_is_strict() -> None:
    with pytest.raises(TrainingConfigError, match="unknown config key"):
        TrainConfig.from_json({**config().to_json(), "epoch": 3})
    with pytest.raises(TrainingConfigError, match="incomplete"):
        TrainConfig.from_json({"format": config().to_json()["format"], "run_id": "r1"})
    with pytest.raises(TrainingConfigError, match="not JSON"):
        TrainConfig.loads("{")
    with pytest.raises(TrainingConfigError, match="not a training config"):
        TrainConfig.from_json({"run_id": "r1"})


def test_default_version_is_dated_and_names_the_run() -> None:
    when = datetime(2026, 3, 4, tzinfo=UTC)
    assert default_version("6f1c2d9e-77aa", when) == "ft-20260304-6f1c2d9e"


def test_missing_run_is_a_typed_error(tmp_path: Path) -> None:
    with pytest.raises(RunNotFoundError):
        RunDir.of(tmp_path, "nope").read_config()


def test_run_results_round_trip_typed(tmp_path: Path) -> None:
    run = RunDir.create(tmp_path, config())
    assert run.read_result() is None
    succeeded = RunSucceeded(
        run_id="r1",
        version="ft-20260101-r1",
        export_dir=str(tmp_path / "export"),
        match_threshold=0.4,
        backbone="scratch",
        candidate={"rank1": 1.0},
        baseline=None,
        baseline_version="lbp-v0",
        split={"heldout_faces": 3},
        training={"workers": 2},
        timings={"total_s": 1.5},
    )
    run.write_result(succeeded)
    assert run.read_result() == succeeded
    assert json.loads(run.result_path.read_text())["status"] == "succeeded"
    failed = RunFailed.of("r1", TrainingConfigError("bad batch"))
    run.write_result(failed)
    assert run.read_result() == failed
    assert json.loads(run.result_path.read_text())["error"] == {
        "code": "invalid_training_config",
        "message": "bad batch",
    }


@pytest.mark.parametrize(
    "text",
    [
        "[]",
        '{"status": "maybe", "run_id": "r1"}',
        '{"status": "failed", "run_id": "r1"}',
        '{"status": "succeeded", "run_id": "r1", "colour": "blue"}',
        "not json",
    ],
)
def test_a_file_that_is_no_result_is_refused(tmp_path: Path, text: str) -> None:
    run = RunDir.create(tmp_path, config())
    run.result_path.write_text(text)
    with pytest.raises(TrainingConfigError):
        run.read_result()


def test_progress_log_appends_atomically_and_continues(tmp_path: Path) -> None:
    run = RunDir.create(tmp_path, config())
    log = ProgressLog(run)
    log.append({"event": "step", "step": 1})
    ProgressLog(run).append({"event": "step", "step": 2})  # a restarted chief continues
    assert [r["step"] for r in run.read_progress()] == [1, 2]
    assert sorted(p.name for p in run.path.iterdir()) == ["config.json", "progress.jsonl"]
    assert oct(run.progress_path.stat().st_mode & 0o777) == "0o644"


def test_cluster_from_tf_config() -> None:
    tf_config = {
        "cluster": {"worker": ["a:1", "b:2", "c:3"]},
        "task": {"type": "worker", "index": 2},
    }
    cluster = cluster_from_env({"TF_CONFIG": json.dumps(tf_config)})
    assert cluster is not None
    assert (cluster.workers, cluster.index, cluster.is_chief) == (("a:1", "b:2", "c:3"), 2, False)
    assert json.loads(cluster.tf_config()) == tf_config


def test_cluster_derived_from_an_indexed_job() -> None:
    env = {
        "JOB_COMPLETION_INDEX": "1",
        "FACERANK_TRAIN_WORKERS": "3",
        "FACERANK_TRAIN_JOB": "facerank-train-r1",
        "FACERANK_TRAIN_SERVICE": "facerank-train-r1",
        "FACERANK_TRAIN_NAMESPACE": "facerank",
        "FACERANK_TRAIN_PORT": "2222",
    }
    cluster = cluster_from_env(env)
    assert cluster is not None
    # Fully qualified: no reliance on the pod's resolv.conf search domains.
    assert cluster.workers == tuple(
        f"facerank-train-r1-{i}.facerank-train-r1.facerank.svc:2222" for i in range(3)
    )
    assert cluster.index == 1
    assert cluster_from_env({}) is None  # one local worker, no TF_CONFIG needed


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"JOB_COMPLETION_INDEX": "0", "FACERANK_TRAIN_WORKERS": "2"}, "FACERANK_TRAIN_JOB"),
        (
            {
                "JOB_COMPLETION_INDEX": "2",
                "FACERANK_TRAIN_WORKERS": "2",
                "FACERANK_TRAIN_JOB": "j",
                "FACERANK_TRAIN_SERVICE": "s",
                "FACERANK_TRAIN_NAMESPACE": "n",
            },
            "outside 2 workers",
        ),
        ({"TF_CONFIG": "{not json"}, "must be JSON"),
        (
            {"TF_CONFIG": '{"cluster": {"chief": ["a:1"], "worker": []}, "task": {}}'},
            "only 'worker'",
        ),
    ],
)
def test_broken_cluster_settings_are_refused(env: dict[str, str], message: str) -> None:
    with pytest.raises(ClusterConfigError, match=message):
        cluster_from_env(env)


def test_backbone_chips_frame_the_face_like_dlib() -> None:
    assert backbone_chip(config()) == DLIB_CHIP_150
    small = backbone_chip(config(backbone="scratch", image_size=75))
    assert small.size == 75
    assert small.left_eye == pytest.approx((47.7 / 2, 47.1 / 2))


def test_imagenet_backbone_fails_fast_offline_or_falls_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A download that cannot connect (a closed loopback port stands for no internet)."""
    pytest.importorskip("keras")
    import training.backbones as backbones

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setattr(backbones, "IMAGENET_WEIGHTS", "http://127.0.0.1:9/weights_{size}.h5")
    settings = Settings(data_dir=tmp_path, cache_dir=tmp_path / "cache")
    imagenet = config(backbone="imagenet", embedding_dim=32)
    began = time.monotonic()
    with pytest.raises(BackboneUnavailableError, match="needs the internet once"):
        backbones.build_backbone(imagenet, backbone_chip(imagenet), settings)
    assert time.monotonic() - began < backbones.DOWNLOAD_TIMEOUT_S
    fallback = imagenet.replace(backbone_fallback="scratch")
    built = backbones.build_backbone(fallback, backbone_chip(fallback), settings)
    assert built.kind == "scratch"
    assert built.model.output_shape == (None, 32)
    assert all(layer.trainable for layer in built.model.layers)  # scratch trains everything


def test_pretrained_backbone_needs_the_package(tmp_path: Path) -> None:
    pytest.importorskip("keras")
    from training.backbones import build_backbone

    settings = Settings(data_dir=tmp_path, cache_dir=tmp_path / "empty-cache")
    with pytest.raises(BackboneUnavailableError, match="facerank models fetch"):
        build_backbone(config(), DLIB_CHIP_150, settings)


def test_what_the_retrain_function_imports_leaves_tensorflow_unloaded() -> None:
    """The retrain function prepares runs and launches workers; TensorFlow would cost it
    seconds at start. Only the workers import it."""
    code = (
        "import sys, training.launcher, training.data, training.backbones, training.worker;"
        "sys.exit('tensorflow' in sys.modules or 'keras' in sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parent.parent)
