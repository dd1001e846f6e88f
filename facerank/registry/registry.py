"""The model registry in the models bucket: the active pointer, model versions, training runs.

Layout::

    active.json              the ActivePointer (see :mod:`facerank.registry.pointer`)
    versions/<version>.json  a version's card: metrics, training config, decision and reason
    runs/<run_id>.json       one training run: parameters, status, the promotion decision

Model *files* are not in the bucket: exported SavedModels live in a model folder that every
process reads (``shared_dir/models`` on the volume training, re-embedding and the predictor
share; ``cache_dir/models`` for the pretrained model setup converts). Object stores are poor at
directories of files that TensorFlow wants to mmap; a shared volume is what the cluster has.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

from facerank.errors import (
    BucketNotFoundError,
    FacerankError,
    ObjectNotFoundError,
    PreconditionFailedError,
)
from facerank.registry.pointer import ActivePointer, ModelRef
from facerank.storage import ObjectStore

log = logging.getLogger(__name__)

POINTER_KEY = "active.json"
VERSIONS = "versions/"
RUNS = "runs/"


class SwitchInProgressError(FacerankError):
    """Another version is already pending: one switch at a time."""

    code = "switch_in_progress"


class ModelRegistry:
    """Reads and changes what the models bucket says about model versions."""

    def __init__(self, store: ObjectStore, bucket: str) -> None:
        self.store = store
        self.bucket = bucket

    def ensure(self) -> None:
        self.store.ensure_bucket(self.bucket)

    # --- the pointer ------------------------------------------------------------------------

    def pointer(self) -> ActivePointer | None:
        """The current pointer, or None before the first process bootstrapped one."""
        found = self._read_pointer()
        return None if found is None else found[0]

    def describe_active(self) -> str:
        """The active version for people to read, with the pending one during a switch."""
        pointer = self.pointer()
        if pointer is None:
            return "none yet (set on the first enrollment)"
        if pointer.pending is None:
            return pointer.active.version
        return f"{pointer.active.version} (switching to {pointer.pending.version})"

    def bootstrap(self, default: ModelRef) -> ActivePointer:
        """The pointer, created with ``default`` active if there is none yet.

        Creation is a put-if-absent: processes starting together agree on one pointer, and a
        later change of ``FACERANK_MODEL`` cannot silently switch a populated gallery to a
        model it holds no embeddings of (that takes :meth:`begin_switch`).
        """
        while True:
            current = self.pointer()
            if current is not None:
                return current
            pointer = ActivePointer(default).activated(default, "bootstrap")
            try:
                self._write_pointer(pointer, etag=None)
            except PreconditionFailedError:
                continue  # another process created it first: use theirs
            log.info("model registry bootstrapped with %s", default.version)
            return pointer

    def begin_switch(self, ref: ModelRef) -> ActivePointer:
        """Make ``ref`` pending: enrollments start embedding with it too."""

        def change(pointer: ActivePointer) -> ActivePointer:
            if pointer.pending is not None and pointer.pending.version != ref.version:
                raise SwitchInProgressError(
                    f"{pointer.pending.version} is already being prepared; "
                    "finish or abort that switch first"
                )
            return pointer.with_pending(ref)

        return self._update(change)

    def complete_switch(self, version: str, reason: str) -> ActivePointer:
        """Make the pending ``version`` active; callers first made the gallery complete."""

        def change(pointer: ActivePointer) -> ActivePointer:
            if pointer.pending is None or pointer.pending.version != version:
                raise SwitchInProgressError(f"{version} is not the pending version")
            return pointer.activated(pointer.pending, reason)

        return self._update(change)

    # --- versions and runs ------------------------------------------------------------------

    def put_version(self, version: str, card: dict[str, Any]) -> None:
        self._put_json(f"{VERSIONS}{version}.json", {**card, "version": version})

    def version(self, version: str) -> dict[str, Any] | None:
        return self._get_json(f"{VERSIONS}{version}.json")

    def versions(self) -> Iterator[dict[str, Any]]:
        yield from self._list_json(VERSIONS)

    def put_run(self, run_id: str, run: dict[str, Any]) -> None:
        self._put_json(f"{RUNS}{run_id}.json", {**run, "run_id": run_id})

    def run(self, run_id: str) -> dict[str, Any] | None:
        return self._get_json(f"{RUNS}{run_id}.json")

    def runs(self) -> Iterator[dict[str, Any]]:
        yield from self._list_json(RUNS)

    # --- internals --------------------------------------------------------------------------

    def _update(self, change: Callable[[ActivePointer], ActivePointer]) -> ActivePointer:
        """Read, change, write-if-unchanged; re-read and re-apply when another writer won."""
        while True:
            found = self._read_pointer()
            if found is None:
                raise ObjectNotFoundError("no active-model pointer yet: bootstrap first")
            pointer, etag = found
            updated = change(pointer)
            if updated == pointer:
                return pointer
            try:
                self._write_pointer(updated, etag=etag)
            except PreconditionFailedError:
                continue
            return updated

    def _read_pointer(self) -> tuple[ActivePointer, str] | None:
        try:
            stored = self.store.get(self.bucket, POINTER_KEY)
        except (ObjectNotFoundError, BucketNotFoundError):
            return None
        try:
            return ActivePointer.from_json(json.loads(stored.data)), stored.info.etag
        except ValueError as exc:
            # A broken pointer must stop the switch machinery, not be silently replaced.
            raise FacerankError(f"{self.bucket}/{POINTER_KEY} is unreadable: {exc}") from None

    def _write_pointer(self, pointer: ActivePointer, *, etag: str | None) -> None:
        body = json.dumps(pointer.to_json(), indent=1).encode()
        if etag is None:
            self.store.put(
                self.bucket, POINTER_KEY, body, content_type="application/json", if_none_match=True
            )
        else:
            self.store.put(
                self.bucket, POINTER_KEY, body, content_type="application/json", if_match=etag
            )

    def _put_json(self, key: str, data: dict[str, Any]) -> None:
        stamped = {**data, "updated_at": datetime.now(UTC).isoformat()}
        body = json.dumps(stamped, indent=1, sort_keys=True, default=str).encode()
        self.store.put(self.bucket, key, body, content_type="application/json")

    def _get_json(self, key: str) -> dict[str, Any] | None:
        try:
            data = json.loads(self.store.get(self.bucket, key).data)
        except (ObjectNotFoundError, BucketNotFoundError):
            return None
        except ValueError:
            log.warning("ignoring unreadable registry object %s", key)
            return None
        return data if isinstance(data, dict) else None

    def _list_json(self, prefix: str) -> Iterator[dict[str, Any]]:
        try:
            keys = [info.key for info in self.store.list(self.bucket, prefix)]
        except BucketNotFoundError:
            return
        for key in keys:
            data = self._get_json(key)
            if data is not None:
                yield data
