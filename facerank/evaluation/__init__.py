"""Accuracy evaluation: the metrics every model choice is measured with, and ``facerank eval``.

:mod:`facerank.evaluation.metrics` is pure NumPy so training can score a candidate model on
held-out identities with exactly the numbers ``facerank eval`` reports; the other modules
(dataset walking, baselines, the run and its report files) serve the command.
"""

from facerank.evaluation.errors import DatasetError, EvaluationError
from facerank.evaluation.metrics import (
    FAR_TARGETS,
    Metrics,
    OperatingPoint,
    Probe,
    Roc,
    evaluate_distances,
    evaluate_embeddings,
    pairwise_distances,
)

__all__ = [
    "FAR_TARGETS",
    "DatasetError",
    "EvaluationError",
    "Metrics",
    "OperatingPoint",
    "Probe",
    "Roc",
    "evaluate_distances",
    "evaluate_embeddings",
    "pairwise_distances",
]
