"""The promotion gate: does a trained model beat the active one on held-out identities?

Both models are measured by the training run's chief on the same held-out identities (people
never trained on), with the harness's metrics (:mod:`facerank.evaluation.metrics`). The gate
looks first at TAR at FAR 1e-2, the operating point the match threshold is calibrated to:
a model that accepts more genuine pairs while letting in no more strangers is better for every
query. It must win by more than the configured margin; with no margin, a tie on TAR is broken
by rank-1 identification, then by the best verification accuracy.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

FAR_TARGET = 1e-2


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str


@dataclass(frozen=True, order=True)
class Score:
    """What the gate compares, in order of importance."""

    tar: float
    rank1: float
    accuracy: float

    @classmethod
    def of(cls, metrics: Mapping[str, Any]) -> Score:
        """From a ``Metrics.to_json()`` object; ``ValueError`` if it lacks what is needed."""
        try:
            [tar] = [
                float(point["tar"])
                for point in metrics["tar_at_far"]
                if float(point["far_target"]) == FAR_TARGET
            ]
            return cls(tar, float(metrics["rank1"]), float(metrics["best"]["accuracy"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"metrics lack TAR at FAR {FAR_TARGET:g}, rank-1 or accuracy") from exc

    def describe(self) -> str:
        return f"TAR@FAR1e-2 {self.tar:.4f}, rank-1 {self.rank1:.4f}, accuracy {self.accuracy:.4f}"


def decide(candidate: Mapping[str, Any], baseline: Mapping[str, Any], *, margin: float) -> Decision:
    """Promote ``candidate`` over ``baseline`` (both ``Metrics.to_json()``) or say why not."""
    new, old = Score.of(candidate), Score.of(baseline)
    versus = f"candidate {new.describe()} vs active {old.describe()}"
    if new.tar > old.tar + margin:
        return Decision(True, f"better TAR at FAR 1e-2 by {new.tar - old.tar:+.4f}: {versus}")
    if margin == 0 and new > old:
        return Decision(True, f"equal TAR, better rank-1 or accuracy: {versus}")
    return Decision(False, f"not better by more than the margin {margin:g}: {versus}")
