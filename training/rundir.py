"""One folder per training run on the shared volume, and atomic writes into it.

Layout (``<shared_dir>/runs/<run_id>/``)::

    config.json        the TrainConfig every worker follows
    data/              the dataset: chips.npy (uint8 N x S x S x 3) + labels.json
    checkpoints/       tf.train.CheckpointManager output, written by the chief only
    workers/<i>/       scratch of non-chief worker i (its throw-away checkpoint copies)
    export/<version>/  the chief's exported model (facerank SavedModel format)
    progress.jsonl     the chief's progress: one JSON object per line
    result.json        the outcome: status, candidate and baseline metrics, export, timings
    logs/              worker logs, when a local launcher runs the workers

Why atomic writes everywhere (temp file in the same folder, fsync, rename): the directory is
read while it is written, by the retrain function polling progress and by restarted workers,
possibly on other machines over NFS. A reader must see the old file or the new one, never half.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from facerank.files import atomic_writer
from training.config import TrainConfig
from training.errors import RunNotFoundError, TrainingConfigError
from training.result import RunResult, result_from_json

SHARED_MODE = 0o644
"""Run files are read by the other workers' pods, which may run as other users."""

RUNS = "runs"
CONFIG_NAME = "config.json"
PROGRESS_NAME = "progress.jsonl"
RESULT_NAME = "result.json"


def write_atomic(path: Path, data: bytes) -> None:
    with atomic_writer(path, mode=SHARED_MODE) as handle:
        handle.write(data)


def write_json(path: Path, value: Any) -> None:
    write_atomic(path, (json.dumps(value, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))


class RunDir:
    """The folder of one run, and the files the workers and the launchers share through it."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    @classmethod
    def of(cls, shared_dir: Path, run_id: str) -> RunDir:
        return cls(Path(shared_dir) / RUNS / run_id)

    @classmethod
    def of_config(cls, config_path: str | os.PathLike[str]) -> RunDir:
        """The run a worker belongs to: the folder holding the config it was given."""
        return cls(Path(config_path).parent)

    @classmethod
    def create(cls, shared_dir: Path, config: TrainConfig) -> RunDir:
        """The run's folder with its ``config.json``; an existing config is replaced, so a
        request redelivered before any worker started writes the same run again."""
        run = cls.of(shared_dir, config.run_id)
        write_json(run.config_path, config.to_json())
        return run

    # --- paths ------------------------------------------------------------------------------

    @property
    def run_id(self) -> str:
        return self.path.name

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG_NAME

    @property
    def data_dir(self) -> Path:
        return self.path / "data"

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / "checkpoints"

    def worker_dir(self, index: int) -> Path:
        return self.path / "workers" / str(index)

    def export_dir(self, version: str) -> Path:
        return self.path / "export" / version

    @property
    def progress_path(self) -> Path:
        return self.path / PROGRESS_NAME

    @property
    def result_path(self) -> Path:
        return self.path / RESULT_NAME

    @property
    def logs_dir(self) -> Path:
        return self.path / "logs"

    # --- files ------------------------------------------------------------------------------

    def read_config(self) -> TrainConfig:
        try:
            text = self.config_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise RunNotFoundError(
                f"no training run at {self.path}: {CONFIG_NAME} missing"
            ) from None
        return TrainConfig.loads(text)

    def read_progress(self) -> list[dict[str, Any]]:
        """Every progress record so far (an empty list before the chief wrote one)."""
        try:
            text = self.progress_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def write_result(self, result: RunResult) -> None:
        write_json(self.result_path, result.to_json())

    def read_result(self) -> RunResult | None:
        """``result.json``, or None while the run has none."""
        try:
            text = self.result_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        try:
            return result_from_json(json.loads(text))
        except ValueError as exc:
            raise TrainingConfigError(f"{self.result_path} is not JSON: {exc}") from None


class ProgressLog:
    """The chief's ``progress.jsonl``: appended record by record, rewritten atomically.

    Appending in place is not atomic over NFS (a reader can see half a line), so each record
    rewrites the file through :func:`write_atomic`; a run logs a few hundred records, so the
    rewrites stay small. A restarted chief continues the records of the earlier attempts.
    """

    def __init__(self, run: RunDir) -> None:
        self._path = run.progress_path
        self._lines = [json.dumps(r) for r in run.read_progress()]

    def append(self, record: dict[str, Any]) -> None:
        self._lines.append(json.dumps(record, ensure_ascii=False))
        write_atomic(self._path, ("\n".join(self._lines) + "\n").encode("utf-8"))
