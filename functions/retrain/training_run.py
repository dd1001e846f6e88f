"""The training side of a run on the shared volume: the run's config and data, and its result.

The retrain function writes ``runs/<run_id>/config.json`` and exports the gallery's crops
(re-chipped for the backbone) into ``runs/<run_id>/data/``; the workers (local processes or
the pods of an Indexed Job, all mounting the same volume) train from there, and the chief
leaves the export and ``result.json`` with the candidate's and the active model's metrics on
the same held-out identities (see :mod:`training.worker`).
"""

from __future__ import annotations

from pathlib import Path

from facerank.gallery import Gallery
from facerank.registry.pointer import ModelRef
from facerank.settings import Settings
from functions.retrain.orchestrator import TrainedModel
from functions.retrain.request import RetrainRequest
from training.backbones import backbone_chip
from training.config import DEFAULT_LOSS, TrainConfig, default_version
from training.data import export_gallery_dataset
from training.result import RunSucceeded
from training.rundir import RunDir

IDENTITIES_PER_WORKER = 4
"""P per worker of a P x K batch: triplet mining needs at least two identities per replica."""


class SharedVolumeTrainer:
    """Prepares runs in ``settings.shared_dir`` from ``gallery`` and reads their results."""

    def __init__(self, settings: Settings, gallery: Gallery) -> None:
        self.shared_dir = settings.shared_dir
        self.steps_per_epoch = settings.retrain_steps_per_epoch
        self.backbone = settings.retrain_backbone
        self.gallery = gallery

    def prepare(self, run_id: str, request: RetrainRequest, baseline: ModelRef) -> str:
        config = TrainConfig(
            run_id=run_id,
            version=default_version(run_id),
            workers=request.workers,
            epochs=request.epochs,
            steps_per_epoch=self.steps_per_epoch,
            backbone=self.backbone,
            loss=request.loss or DEFAULT_LOSS,
            identities_per_batch=IDENTITIES_PER_WORKER * request.workers,
            baseline=str(baseline.path) if baseline.path is not None else baseline.version,
        )
        run = RunDir.create(self.shared_dir, config)
        export_gallery_dataset(self.gallery, run, backbone_chip(config), progress=False)
        return str(run.config_path)

    def result(self, run_id: str) -> TrainedModel:
        run = RunDir.of(self.shared_dir, run_id)
        result = run.read_result()
        if not isinstance(result, RunSucceeded):
            why = "none" if result is None else f"{result.code}: {result.message}"
            raise RuntimeError(f"run {run_id} left no successful result ({why})")
        candidate, baseline = result.candidate, result.baseline
        if not candidate or not baseline:
            raise RuntimeError(
                "no held-out evaluation: the gallery needs more identities to compare models"
            )
        details = {
            "backbone": result.backbone,
            "match_threshold": result.match_threshold,
            "baseline_version": result.baseline_version,
            "split": result.split,
            "timings": result.timings,
            "config": run.read_config().to_json(),
        }
        return TrainedModel(
            version=result.version,
            export_dir=Path(result.export_dir),
            candidate=candidate,
            baseline=baseline,
            details=details,
        )
