"""One training run from request to decision: data, distributed training, gate, promotion.

The retrain function answers a request at once and runs this in the background, because a
run takes minutes and an event delivery must not. Every step is recorded in the run's record
in the model registry (``runs/<run_id>.json``), which ``facerank retrain --wait`` and
``facerank models`` read, and announced as a CloudEvent:

``model.trained`` after training and evaluation, then ``model.promoted`` (after
``gallery.reindexed``) or ``model.rejected``; ``retrain.failed`` when a step fails.

Only one run at a time: a run holds ``runs/current.json`` (created with a put-if-absent)
until it ends; a request while it is held is refused. A run whose function restarted is
resumed from its record by :meth:`RunOrchestrator.resume`.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol

from cloudevents.http import CloudEvent

from facerank.errors import FacerankError, ObjectNotFoundError, PreconditionFailedError
from facerank.events import (
    GALLERY_REINDEXED,
    MODEL_PROMOTED,
    MODEL_REJECTED,
    MODEL_TRAINED,
    RETRAIN_FAILED,
    run_event,
)
from facerank.files import atomic_folder
from facerank.gallery import Gallery
from facerank.registry import ModelRef, ModelRegistry, ServingModels, switch_model
from facerank.registry.locate import installed_models_dir
from facerank.reindex import Workers
from facerank.settings import Settings
from functions.retrain.gate import decide
from functions.retrain.request import RetrainRequest

log = logging.getLogger(__name__)

SOURCE = "facerank/retrain"
LOCK_KEY = "runs/current.json"
POLL_S = 2.0
STEPS = ("preparing data", "training", "deciding", "promoting")

RunStatus = Literal["pending", "running", "succeeded", "failed"]


class Launcher(Protocol):
    """Starts and follows the workers of a run: local processes or a Kubernetes Job."""

    def start(self, run_id: str, workers: int, config_path: str, *, deadline_s: int) -> None: ...

    def status(self, run_id: str) -> RunStatus: ...

    def delete(self, run_id: str) -> None: ...


@dataclass(frozen=True)
class TrainedModel:
    """What a finished run left on the shared volume."""

    version: str
    export_dir: Path
    candidate: Mapping[str, Any]
    """``Metrics.to_json()`` of the new model on the held-out identities."""
    baseline: Mapping[str, Any]
    """The same for the active model, on the same identities."""
    details: Mapping[str, Any]
    """Anything else worth keeping with the version: config, timings, split sizes."""


class Trainer(Protocol):
    """The training side of a run: what the workers read and what they leave behind."""

    def prepare(self, run_id: str, request: RetrainRequest, baseline: ModelRef) -> str:
        """Write the run's data and configuration; the config path the workers get."""
        ...

    def result(self, run_id: str) -> TrainedModel:
        """The exported model and its evaluation, once the workers succeeded."""
        ...


class RunRefusedError(FacerankError):
    """Another run holds the lock."""

    code = "run_in_progress"


Emit = Callable[[CloudEvent], None]


class RunOrchestrator:
    """Drives runs for one deployment; ``emit`` sends events (to the broker)."""

    def __init__(
        self,
        settings: Settings,
        models: ServingModels,
        gallery: Gallery,
        trainer: Trainer,
        launcher: Launcher,
        emit: Emit,
    ) -> None:
        self.settings = settings
        self.models = models
        self.registry: ModelRegistry = models.registry
        self.gallery = gallery
        self.trainer = trainer
        self.launcher = launcher
        self.emit = emit

    # --- the lock ---------------------------------------------------------------------------

    def claim(self, run_id: str, request: RetrainRequest) -> bool:
        """Take the one-run lock for ``run_id``; False if this run already holds it (a
        redelivered request). Raises :class:`RunRefusedError` if another run holds it."""
        body = json.dumps({"run_id": run_id}).encode()
        try:
            self.registry.store.put(self.registry.bucket, LOCK_KEY, body, if_none_match=True)
        except PreconditionFailedError:
            holder = self.held_run()
            if holder == run_id:
                return False
            raise RunRefusedError(f"run {holder} is in progress; one run at a time") from None
        self._record(run_id, status="requested", request=request.to_json(), steps_done=0)
        return True

    def held_run(self) -> str | None:
        """The run holding the lock, if any (to refuse others, or resume after a restart)."""
        try:
            data = json.loads(self.registry.store.get(self.registry.bucket, LOCK_KEY).data)
        except (ObjectNotFoundError, ValueError):
            return None
        return str(data.get("run_id")) if isinstance(data, dict) else None

    def _release(self, run_id: str) -> None:
        if self.held_run() == run_id:
            self.registry.store.delete(self.registry.bucket, LOCK_KEY)

    # --- a run ------------------------------------------------------------------------------

    def run(self, run_id: str, request: RetrainRequest) -> str:
        """Every step of a claimed run; its final status. Never raises: failures are recorded."""
        try:
            baseline = self.models.pointer().active
            self._step(run_id, 0, "preparing data")
            config_path = self.trainer.prepare(run_id, request, baseline)
            self.launcher.start(
                run_id, request.workers, config_path, deadline_s=self.settings.retrain_deadline_s
            )
            return self._follow(run_id, request)
        except Exception as exc:  # a run must end recorded, whatever broke
            return self._fail(run_id, exc)
        finally:
            self._release(run_id)

    def resume(self, run_id: str) -> str:
        """Pick a run up again after the function restarted: follow it from training on."""
        record = self.registry.run(run_id) or {}
        if record.get("status") in ("promoted", "rejected", "failed"):
            self._release(run_id)
            return str(record["status"])
        try:
            request = RetrainRequest.parse(record.get("request"), self.settings)
            return self._follow(run_id, request)
        except Exception as exc:
            return self._fail(run_id, exc)
        finally:
            self._release(run_id)

    def _follow(self, run_id: str, request: RetrainRequest) -> str:
        self._step(run_id, 1, "training", workers=request.workers)
        deadline = time.monotonic() + self.settings.retrain_deadline_s
        while (status := self.launcher.status(run_id)) in ("pending", "running"):
            if time.monotonic() > deadline:
                self.launcher.delete(run_id)
                limit = self.settings.retrain_deadline_s
                raise TimeoutError(f"training did not finish within {limit} s")
            time.sleep(POLL_S)
        if status == "failed":
            raise RuntimeError("the training workers failed (see the run's worker logs)")
        trained = self.trainer.result(run_id)
        self.emit(
            run_event(
                MODEL_TRAINED,
                run_id,
                {"model_version": trained.version, "metrics": dict(trained.candidate)},
                source=SOURCE,
            )
        )
        self._step(run_id, 2, "deciding", model_version=trained.version)
        margin = self.settings.promotion_margin
        decision = decide(trained.candidate, trained.baseline, margin=margin)
        card = {
            "metrics": dict(trained.candidate),
            "baseline_metrics": dict(trained.baseline),
            "run_id": run_id,
            "decision": "promoted" if decision.promote else "rejected",
            "reason": decision.reason,
            **dict(trained.details),
        }
        if not decision.promote:
            self.registry.put_version(trained.version, card)
            self._record(run_id, status="rejected", reason=decision.reason, steps_done=len(STEPS))
            self.emit(
                run_event(
                    MODEL_REJECTED,
                    run_id,
                    {"model_version": trained.version, "reason": decision.reason},
                    source=SOURCE,
                )
            )
            return "rejected"
        return self._promote(run_id, trained, card, decision.reason)

    def _promote(
        self, run_id: str, trained: TrainedModel, card: dict[str, Any], reason: str
    ) -> str:
        self._step(run_id, 3, "promoting", model_version=trained.version)
        install_model(trained.export_dir, installed_models_dir(self.settings) / trained.version)
        self.registry.put_version(trained.version, card)
        ref = ModelRef(trained.version)
        result = switch_model(
            self.registry,
            self.gallery,
            ref,
            self.models.embedder(ref),
            settings=self.settings,
            reason=f"run {run_id}: {reason}",
            workers=Workers(self.settings, ref, self.settings.reindex_workers),
        )
        self.emit(
            run_event(
                GALLERY_REINDEXED,
                run_id,
                {
                    "model_version": trained.version,
                    "records": result.records,
                    "embedded": result.embedded,
                },
                source=SOURCE,
            )
        )
        self._record(run_id, status="promoted", reason=reason, steps_done=len(STEPS))
        self.emit(
            run_event(
                MODEL_PROMOTED,
                run_id,
                {"model_version": trained.version, "reason": reason},
                source=SOURCE,
            )
        )
        return "promoted"

    def _fail(self, run_id: str, exc: BaseException) -> str:
        reason = f"{type(exc).__name__}: {exc}"
        log.exception("run %s failed", run_id)
        self._record(run_id, status="failed", reason=reason)
        try:
            self.emit(run_event(RETRAIN_FAILED, run_id, {"reason": reason}, source=SOURCE))
        except FacerankError:
            log.warning("could not announce the failure of run %s", run_id)
        return "failed"

    def _step(self, run_id: str, done: int, status: str, **fields: Any) -> None:
        log.info("run %s: %s", run_id, status)
        self._record(run_id, status=status, steps_done=done, **fields)

    def _record(self, run_id: str, **fields: Any) -> None:
        record = self.registry.run(run_id) or {"started_at": datetime.now(UTC).isoformat()}
        self.registry.put_run(run_id, {**record, **fields, "steps_total": len(STEPS)})


def install_model(export_dir: Path, target: Path) -> Path:
    """Copy a run's export into the model folder every component reads, atomically."""
    if target.exists():
        return target  # versions are immutable: an earlier attempt installed it already
    with atomic_folder(target) as staging:
        shutil.copytree(export_dir, staging, dirs_exist_ok=True)
    return target
