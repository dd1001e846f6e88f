"""The active-model pointer: which model version every query and enrollment uses, and which
one the gallery is being re-embedded for.

One small JSON object, ``active.json`` in the models bucket, is the single switch of the whole
deployment. Why a pointer with a ``pending`` slot instead of a plain version:

* Embeddings of two versions are never comparable, so a new version may only serve once the
  gallery holds its embedding of every face. Promotion first names the new version
  ``pending``: from then on enrollments embed with both versions, while the re-indexer fills
  in the faces enrolled before. Only when every record has both does ``active`` move, in one
  conditional write. Predictors watch ``active`` and swap model and gallery together.
* Every change is a conditional put over the ETag read, so two writers (two promotions, an
  operator and a retrain) can never silently overwrite each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from facerank.embedding.base import validate_model_version
from facerank.errors import ModelLoadError

FORMAT = "facerank.models.active/v1"
HISTORY_KEPT = 50
"""Switches remembered in the pointer itself; each version's own record keeps the rest."""


@dataclass(frozen=True)
class ModelRef:
    """A model version and, for models outside the registry's folders, where it lives."""

    version: str
    path: Path | None = None
    """An exported model directory given explicitly (``FACERANK_MODEL=/path``); None for
    built-in models and for versions found by name in the model folders."""

    def __post_init__(self) -> None:
        validate_model_version(self.version)

    def to_json(self) -> dict[str, Any]:
        return {"version": self.version, "path": None if self.path is None else str(self.path)}

    @classmethod
    def from_json(cls, data: Any) -> ModelRef:
        if not isinstance(data, dict):
            raise ValueError(f"expected a model reference object, got {type(data).__name__}")
        path = data.get("path")
        return cls(str(data["version"]), None if path is None else Path(str(path)))


@dataclass(frozen=True)
class Switch:
    """One entry of the pointer's history: a version became active."""

    version: str
    at: datetime
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"version": self.version, "at": self.at.isoformat(), "reason": self.reason}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Switch:
        return cls(str(data["version"]), datetime.fromisoformat(data["at"]), str(data["reason"]))


@dataclass(frozen=True)
class ActivePointer:
    """What serves now, and what the gallery is being prepared for."""

    active: ModelRef
    pending: ModelRef | None = None
    history: tuple[Switch, ...] = field(default=())

    @property
    def serving_versions(self) -> tuple[ModelRef, ...]:
        """Versions every new enrollment must embed with: active, and pending if any."""
        return (self.active,) if self.pending is None else (self.active, self.pending)

    def with_pending(self, ref: ModelRef | None) -> ActivePointer:
        return replace(self, pending=ref)

    def activated(
        self, ref: ModelRef, reason: str, *, now: datetime | None = None
    ) -> ActivePointer:
        """``ref`` active, nothing pending, the switch remembered."""
        entry = Switch(ref.version, now or datetime.now(UTC), reason)
        return ActivePointer(ref, None, (*self.history, entry)[-HISTORY_KEPT:])

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "active": self.active.to_json(),
            "pending": None if self.pending is None else self.pending.to_json(),
            "history": [entry.to_json() for entry in self.history],
        }

    @classmethod
    def from_json(cls, data: Any) -> ActivePointer:
        """Parse ``active.json``; ``ValueError`` for anything that is not one."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"not an active-model pointer (expected format {FORMAT!r})")
        try:
            pending = data.get("pending")
            return cls(
                active=ModelRef.from_json(data["active"]),
                pending=None if pending is None else ModelRef.from_json(pending),
                history=tuple(Switch.from_json(e) for e in data.get("history", ())),
            )
        except (KeyError, TypeError, ModelLoadError) as exc:
            raise ValueError(f"malformed active-model pointer: {exc}") from None
