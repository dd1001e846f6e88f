"""What a retrain request may ask for, checked before anything starts."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from facerank.errors import InvalidEventError
from facerank.settings import Settings

MAX_WORKERS = 16
MAX_EPOCHS = 200


@dataclass(frozen=True)
class RetrainRequest:
    workers: int
    epochs: int
    loss: str | None
    """None: the training default (the loss the fine-tuning experiment measured best)."""

    @classmethod
    def parse(cls, data: object, settings: Settings) -> RetrainRequest:
        """``data`` of ``retrain.requested`` (every field optional); InvalidEventError if bad."""
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise InvalidEventError("retrain request data must be a JSON object")
        unknown = set(data) - {"workers", "epochs", "loss"}
        if unknown:
            raise InvalidEventError(f"unknown retrain parameter(s): {', '.join(sorted(unknown))}")
        loss = data.get("loss")
        if loss is not None and not isinstance(loss, str):
            raise InvalidEventError("'loss' must be a string")
        return cls(
            workers=_bounded(data, "workers", settings.retrain_workers, MAX_WORKERS),
            epochs=_bounded(data, "epochs", settings.retrain_epochs, MAX_EPOCHS),
            loss=loss,
        )

    def to_json(self) -> dict[str, Any]:
        return {"workers": self.workers, "epochs": self.epochs, "loss": self.loss}


def _bounded(data: Mapping[str, Any], name: str, default: int, largest: int) -> int:
    value = data.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= largest:
        raise InvalidEventError(f"'{name}' must be an integer from 1 to {largest}, not {value!r}")
    return value
