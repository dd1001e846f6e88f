"""How a training run ended: :class:`RunSucceeded` or :class:`RunFailed`, the run's ``result.json``.

Why typed, like :class:`training.config.TrainConfig`: the file is written by the chief (or by a
launcher that gave up on the workers) and read by the launchers and the retrain function, in
other processes and on other machines. One definition of its fields keeps writer and readers
from drifting apart, and a file that is not a result fails where it is read, naming why,
instead of as a ``KeyError`` deep in the retrain function.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from facerank.errors import FacerankError
from training.errors import TrainingConfigError


@dataclass(frozen=True)
class RunSucceeded:
    """The chief exported the model and scored it (and the baseline) on held-out identities."""

    run_id: str
    version: str
    export_dir: str
    match_threshold: float
    backbone: str
    """The backbone kind actually trained (a fallback may replace the configured one)."""
    candidate: dict[str, Any] | None
    """Held-out metrics of the trained model (:meth:`EmbeddingMetrics.to_json`); None when the
    gallery had no held-out identities."""
    baseline: dict[str, Any] | None
    """The same metrics of the baseline (the active model) on the same identities."""
    baseline_version: str | None
    split: dict[str, Any]
    """Which identities trained and which were held out, and their face counts."""
    training: dict[str, Any]
    """Workers, steps, the step resumed from, final loss, images per second."""
    timings: dict[str, float]

    status: ClassVar[Literal["succeeded"]] = "succeeded"

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status, **dataclasses.asdict(self)}


@dataclass(frozen=True)
class RunFailed:
    """The run cannot succeed: the chief's permanent error, or the launcher's verdict (a
    deadline, restarts used up)."""

    run_id: str
    code: str
    message: str

    status: ClassVar[Literal["failed"]] = "failed"

    @classmethod
    def of(cls, run_id: str, exc: FacerankError) -> RunFailed:
        return cls(run_id, **exc.to_json())

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "run_id": self.run_id,
            "error": {"code": self.code, "message": self.message},
        }


RunResult = RunSucceeded | RunFailed


def result_from_json(data: object) -> RunResult:
    """The result in ``data`` (a ``to_json`` object); :class:`TrainingConfigError` if it is
    not one."""
    if not isinstance(data, dict):
        raise TrainingConfigError("a run result must be a JSON object")
    values = {k: v for k, v in data.items() if k != "status"}
    try:
        if data.get("status") == RunSucceeded.status:
            return RunSucceeded(**values)
        if data.get("status") == RunFailed.status:
            error = values.pop("error")
            return RunFailed(code=str(error["code"]), message=str(error["message"]), **values)
    except (TypeError, KeyError) as exc:  # a key missing or unknown
        raise TrainingConfigError(f"not a run result: {exc}") from None
    raise TrainingConfigError(f"unknown run status {data.get('status')!r}")
