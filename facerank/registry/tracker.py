"""The models a writer must embed with right now, loaded once and followed as they change.

Enrollment reads the pointer for every event (one small GET) rather than caching it: a
cached pointer is exactly how a face enrolled during a switch would miss the new version.
Loaded embedders are kept per version, so following the pointer costs no reload.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from facerank.embedding import Embedder
from facerank.registry.locate import default_model, load_model
from facerank.registry.pointer import ActivePointer, ModelRef
from facerank.registry.registry import ModelRegistry
from facerank.settings import Settings

Loader = Callable[[ModelRef, Settings], Embedder]


class ServingModels:
    """The active (and pending) model versions of one registry, as loaded embedders."""

    def __init__(
        self, registry: ModelRegistry, settings: Settings, *, load: Loader = load_model
    ) -> None:
        self.registry = registry
        self.settings = settings
        self._load = load
        self._loaded: dict[str, Embedder] = {}
        self._lock = threading.Lock()

    def pointer(self) -> ActivePointer:
        """The pointer now; the first call on an empty registry creates it from settings."""
        pointer = self.registry.pointer()
        if pointer is None:
            self.registry.ensure()
            pointer = self.registry.bootstrap(default_model(self.settings))
        return pointer

    def embedder(self, ref: ModelRef) -> Embedder:
        """``ref`` loaded (once per process); versions no longer served are let go."""
        with self._lock:
            embedder = self._loaded.get(ref.version)
            if embedder is None:
                embedder = self._load(ref, self.settings)
                self._loaded[ref.version] = embedder
            return embedder

    def current(self) -> tuple[ActivePointer, dict[str, Embedder]]:
        """The pointer and an embedder for each version it serves, active first."""
        pointer = self.pointer()
        embedders = {ref.version: self.embedder(ref) for ref in pointer.serving_versions}
        with self._lock:
            for version in self._loaded.keys() - embedders.keys():
                del self._loaded[version]
        return pointer, embedders
