"""Why a training run cannot go on, as typed errors with facerank's stable codes.

The worker maps them to its exit status: a :class:`TrainingError` that is not ``retryable``
(bad configuration, unusable data, missing weights) exits 2, which the launchers treat as final,
because restarting the same run would fail the same way; anything else (a lost peer, a collective
timeout, a crash) exits 1 and may be retried from the latest checkpoint.
"""

from __future__ import annotations

from facerank.errors import FacerankError


class TrainingError(FacerankError):
    """Base of the errors a training run raises on purpose."""

    code = "training_failed"


class TrainingConfigError(TrainingError):
    """``config.json`` (or a value for it) is not a run configuration any worker can follow."""

    code = "invalid_training_config"


class TrainingDataError(TrainingError):
    """The run's dataset is missing, malformed, or too small for the configured batches."""

    code = "invalid_training_data"


class BackboneUnavailableError(TrainingError):
    """A backbone's pretrained weights are neither on disk nor downloadable from here."""

    code = "backbone_unavailable"


class ClusterConfigError(TrainingError):
    """``TF_CONFIG`` or the ``FACERANK_TRAIN_*`` variables do not describe a usable cluster."""

    code = "invalid_cluster"


class RunNotFoundError(TrainingError):
    """No run directory, or no run the launcher asked knows, has that id (a local launcher:
    no process or result; the Kubernetes one: no Job)."""

    code = "run_not_found"
