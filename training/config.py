"""What one training run does: :class:`TrainConfig`, stored as the run's ``config.json``.

Why a file and not flags: every worker of a run (N pods of an Indexed Job, or N local
processes) must follow exactly the same configuration, and a restarted worker must resume the
run it was part of. The retrain function writes the file once on the shared volume and each
worker is only told its path (``FACERANK_TRAIN_CONFIG``). The JSON is strict both ways: unknown
keys and wrongly typed values are refused, so a typo fails the run at once instead of silently
training with a default.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from facerank.embedding.base import validate_model_version
from facerank.errors import ModelLoadError
from training.errors import TrainingConfigError

FORMAT = "facerank.training.config/v1"
BACKBONES = ("pretrained", "scratch", "imagenet")
FALLBACKS = ("error", "scratch")
TRIPLET_LOSSES = ("semihard", "batchhard")
LOSSES = (*TRIPLET_LOSSES, "arcface", *(f"arcface+{t}" for t in TRIPLET_LOSSES))
"""``semihard``: FaceNet's triplet loss with semi-hard negatives; ``batchhard``: the hardest
positive and negative of each anchor; ``arcface``: an additive angular margin classifier over
the training identities; ``arcface+<triplet>``: both losses summed."""
DEFAULT_LOSS = "semihard"
"""Chosen by ``bench/finetune_att.py``: the best held-out accuracy fine-tuning dlib-r34-v1."""

_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")

_TYPES: dict[str, tuple[type, ...]] = {
    "run_id": (str,),
    "version": (str,),
    "backbone": (str,),
    "backbone_fallback": (str,),
    "image_size": (int, type(None)),
    "train_from": (str,),
    "loss": (str,),
    "warmup_steps": (int,),
    "workers": (int,),
    "epochs": (int,),
    "steps_per_epoch": (int,),
    "identities_per_batch": (int,),
    "faces_per_identity": (int,),
    "learning_rate": (float, int),
    "margin": (float, int),
    "embedding_dim": (int,),
    "seed": (int,),
    "holdout_fraction": (float, int),
    "baseline": (str, type(None)),
    "threshold": (float, int, type(None)),
    "checkpoint_every": (int,),
    "log_every": (int,),
    "collective_timeout_s": (float, int),
    "startup_timeout_s": (float, int),
}


@dataclass(frozen=True)
class TrainConfig:
    """One run's configuration; every worker of the run reads the same one."""

    run_id: str
    """Names the run directory ``runs/<run_id>`` on the shared volume."""
    version: str
    """The model version the run exports (``ft-<date>-<short>`` by :func:`default_version`)."""
    backbone: str = "pretrained"
    """``pretrained`` (dlib-r34-v1's network and weights), ``scratch`` (a small CPU-sized
    ResNet) or ``imagenet`` (MobileNetV2 with ImageNet weights), see :mod:`training.backbones`."""
    backbone_fallback: str = "error"
    """When a backbone's weights are unavailable: ``error`` fails the run, ``scratch`` trains
    the scratch network instead (and says so in the result)."""
    image_size: int | None = None
    """Chip size in pixels; None: the backbone's own (pretrained: 150, the only one it takes)."""
    train_from: str = "auto"
    """Freeze policy: layers before this stage stay frozen (``stem`` trains everything, ``fc``
    only the projection); ``auto`` is each backbone's default."""
    loss: str = DEFAULT_LOSS
    warmup_steps: int = 0
    """First steps training the ArcFace head alone (the backbone frozen) before ``loss``."""
    workers: int = 1
    epochs: int = 10
    steps_per_epoch: int = 50
    identities_per_batch: int = 8
    """P of a P x K batch: identities per global batch."""
    faces_per_identity: int = 4
    """K of a P x K batch: faces sampled per identity (with replacement when it has fewer)."""
    learning_rate: float = 1e-4
    margin: float = 0.2
    """Triplet margin on L2-normalised embeddings (FaceNet's 0.2)."""
    embedding_dim: int = 128
    seed: int = 0
    holdout_fraction: float = 0.2
    """Share of identities never trained on, on which the candidate and baseline are compared."""
    baseline: str | None = None
    """The model to compare against (as ``FACERANK_MODEL`` names one); None: no baseline."""
    threshold: float | None = None
    """Distance at which the metrics also report TAR/FAR (the serving match threshold)."""
    checkpoint_every: int = 50
    log_every: int = 10
    collective_timeout_s: float = 300.0
    """A collective (one step's gradient all-reduce) that takes longer fails the step."""
    startup_timeout_s: float = 600.0
    """The cluster must form and finish its first step within this, or the worker exits."""

    def __post_init__(self) -> None:
        for name, types in _TYPES.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, types):
                raise TrainingConfigError(f"config {name!r} has the wrong type: {value!r}")
        _check(_RUN_ID.fullmatch(self.run_id) is not None, f"invalid run id {self.run_id!r}")
        try:
            validate_model_version(self.version)
        except ModelLoadError as exc:
            raise TrainingConfigError(str(exc)) from None
        _check(self.backbone in BACKBONES, f"backbone must be one of {', '.join(BACKBONES)}")
        _check(self.backbone_fallback in FALLBACKS, "backbone_fallback must be error or scratch")
        _check(self.loss in LOSSES, f"loss must be one of {', '.join(LOSSES)}, not {self.loss!r}")
        _check(
            self.backbone != "pretrained" or self.image_size in (None, 150),
            "the pretrained backbone takes 150 px chips only",
        )
        _check(
            self.backbone != "pretrained" or self.embedding_dim == 128,
            "the pretrained backbone's embedding has 128 dimensions",
        )
        _check(self.image_size is None or 32 <= self.image_size <= 512, "image_size: 32 to 512")
        for name in ("workers", "epochs", "steps_per_epoch", "identities_per_batch"):
            _check(getattr(self, name) >= 1, f"{name} must be at least 1")
        for name in ("checkpoint_every", "log_every", "embedding_dim"):
            _check(getattr(self, name) >= 1, f"{name} must be at least 1")
        _check(self.faces_per_identity >= 2, "faces_per_identity must be at least 2 (triplets)")
        _check(
            self.identities_per_batch % self.workers == 0,
            f"identities_per_batch ({self.identities_per_batch}) must split evenly over "
            f"{self.workers} workers: every replica mines triplets in its own P x K share",
        )
        _check(
            not set(self.loss.split("+")) & set(TRIPLET_LOSSES)
            or self.identities_per_batch // self.workers >= 2,
            "triplet losses need at least two identities per worker in a batch "
            f"(identities_per_batch {self.identities_per_batch}, workers {self.workers})",
        )
        _check(self.warmup_steps >= 0, "warmup_steps must not be negative")
        _check(
            self.warmup_steps < self.total_steps,
            f"warmup_steps ({self.warmup_steps}) must leave steps for the loss ({self.loss})",
        )
        _check(0.0 <= self.holdout_fraction < 1.0, "holdout_fraction must be in [0, 1)")
        for name in ("learning_rate", "margin", "collective_timeout_s", "startup_timeout_s"):
            value = float(getattr(self, name))
            _check(math.isfinite(value) and value > 0, f"{name} must be positive")
        _check(
            self.threshold is None or 0 < self.threshold <= 2,
            "threshold must be a unit-vector distance in (0, 2]",
        )

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch

    @property
    def global_batch(self) -> int:
        """Faces per step over all workers: P x K."""
        return self.identities_per_batch * self.faces_per_identity

    @property
    def uses_arcface(self) -> bool:
        """Whether the run needs the ArcFace head (as its loss, part of it, or as warm-up)."""
        return self.loss.startswith("arcface") or self.warmup_steps > 0

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with ``changes``, validated like any config."""
        return dataclasses.replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, **dataclasses.asdict(self)}

    @classmethod
    def from_json(cls, data: object) -> TrainConfig:
        """The config in ``data`` (a :meth:`to_json` object); :class:`TrainingConfigError` if
        it is not one: another format, unknown or missing keys, wrong types or values."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise TrainingConfigError(f"not a training config (expected format {FORMAT!r})")
        values = {k: v for k, v in data.items() if k != "format"}
        unknown = set(values) - set(_TYPES)
        if unknown:
            raise TrainingConfigError(f"unknown config key(s): {', '.join(sorted(unknown))}")
        try:
            return cls(**values)
        except TypeError as exc:  # a required key is missing
            raise TrainingConfigError(f"incomplete training config: {exc}") from None

    @classmethod
    def loads(cls, text: str) -> TrainConfig:
        try:
            return cls.from_json(json.loads(text))
        except ValueError as exc:
            raise TrainingConfigError(f"config is not JSON: {exc}") from None


def default_version(run_id: str, now: datetime | None = None) -> str:
    """``ft-<UTC date>-<first 8 characters of the run id>``: sortable and unique per run."""
    day = (now or datetime.now(UTC)).strftime("%Y%m%d")
    short = re.sub(r"[^A-Za-z0-9]", "", run_id)[:8] or "run"
    return f"ft-{day}-{short}"


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise TrainingConfigError(message)
