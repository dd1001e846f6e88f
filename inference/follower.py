"""What the predictor serves: one model and the gallery embedded by it, kept current.

Why a pair: embeddings are only comparable within one model version, so the pipeline and the
gallery snapshot it ranks against travel as one immutable object, replaced by one assignment.
A request reads it once and uses that pair throughout, so no request ever mixes versions.

Why one follower thread: the gallery changes (faces enrolled and removed) and the active model
changes (the pointer moves after a switch) are both applied by polling, in one thread, so the
two kinds of update can never interleave. On a model change the new model is loaded and its
gallery read in full while the old pair keeps serving; then one assignment swaps both. The
switch procedure guarantees that gallery is complete before the pointer moves.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from facerank.embedding import Embedder
from facerank.gallery import Gallery
from facerank.pipeline import FacePipeline
from facerank.registry import ServingModels
from facerank.registry.pointer import ModelRef
from inference.snapshot import GalleryRefresher, GallerySnapshot

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServingPair:
    """A pipeline and a gallery snapshot embedded by the same model version."""

    pipeline: FacePipeline
    snapshot: GallerySnapshot

    def __post_init__(self) -> None:
        if self.pipeline.model_version != self.snapshot.model_version:
            raise ValueError(
                f"pipeline {self.pipeline.model_version} cannot rank a gallery of "
                f"{self.snapshot.model_version}"
            )

    @property
    def model_version(self) -> str:
        return self.pipeline.model_version


class ServingFollower:
    """Polls the model pointer and the gallery; hands every new :class:`ServingPair` to
    ``publish`` (which must be cheap: an assignment)."""

    def __init__(
        self,
        gallery: Gallery,
        models: ServingModels,
        make_pipeline: Callable[[Embedder], FacePipeline],
        publish: Callable[[ServingPair], None],
        *,
        interval: float,
        approximate_above: int = 0,
    ) -> None:
        if interval <= 0:
            raise ValueError(f"refresh interval must be positive, got {interval}")
        self.gallery = gallery
        self.models = models
        self.interval = interval
        self.approximate_above = approximate_above
        self._make_pipeline = make_pipeline
        self._publish = publish
        self._pipeline: FacePipeline | None = None
        self._refresher: GalleryRefresher | None = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def poll(self) -> None:
        """One round: follow the pointer if it moved, else pick up gallery changes."""
        active = self.models.pointer().active
        if self._pipeline is None or self._pipeline.model_version != active.version:
            self._switch_to(active)
            return
        assert self._refresher is not None  # noqa: S101 - set together with the pipeline
        snapshot = self._refresher.refresh()
        if snapshot is not None:
            self._publish(ServingPair(self._pipeline, snapshot))

    def start(self) -> None:
        """Poll in the background until :meth:`stop`; a failing poll keeps the last pair.

        Only after a first successful :meth:`poll`: a follower that loaded nothing has
        nothing to keep current (and a pair published by other means stays untouched).
        """
        if self._thread is None and self._pipeline is not None:
            self._thread = threading.Thread(target=self._run, name="serving-follower", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _switch_to(self, ref: ModelRef) -> None:
        """Load ``ref`` and its whole gallery aside, then publish both at once."""
        previous = None if self._pipeline is None else self._pipeline.model_version
        if previous is not None:
            log.info("switching to %s: loading it and its gallery aside", ref.version)
        pipeline = self._make_pipeline(self.models.embedder(ref))
        refresher = GalleryRefresher(
            self.gallery, ref.version, approximate_above=self.approximate_above
        )
        snapshot = refresher.refresh()
        assert snapshot is not None  # noqa: S101 - a first poll always builds one
        self._pipeline, self._refresher = pipeline, refresher
        self._publish(ServingPair(pipeline, snapshot))
        if previous is not None:
            log.info(
                "now serving %s with %d face(s), was %s", ref.version, snapshot.faces, previous
            )

    def _run(self) -> None:
        while not self._stopping.wait(self.interval):
            try:
                self.poll()
            except Exception:
                # Whatever broke (store outage, a model that will not load), serving the
                # previous pair beats a dead follower: log it and try again on the next tick.
                log.exception("serving refresh failed; keeping the current model and gallery")
