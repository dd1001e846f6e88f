"""An exported face-api network's serving signature, loaded once, on first use, from any thread.

Why one helper: the landmark net and the SSD detector are both SavedModels with one
``serving_default`` signature taking a batch of square float32 images, loaded lazily (TensorFlow
is imported only when a photo first needs them) and called from the predictor's and the CLI's
worker threads. Their signature is checked when loaded, so a foreign folder is refused with
:class:`ModelLoadError` before any request, not with a shape error in the middle of one.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from facerank.errors import ModelLoadError

SIGNATURE = "serving_default"
INPUT_NAME = "images"
"""Every exported face-api network takes ``images``: ``(N, size, size, 3)`` float32 in 0..255."""


_LOADED: dict[Path, tuple[Any, Any]] = {}
"""Loaded SavedModels (kept alive with their signature) by folder."""
_LOADED_LOCK = threading.Lock()


class ServedNet:
    """``model_dir``'s signature: ``images`` ``(N, size, size, 3)`` -> named float32 outputs.

    ``what`` names the network in errors. Loading happens once per process and folder, under
    a lock, however many objects serve it (each pipeline, the enroll function's probe); calling
    the loaded signature is thread-safe.
    """

    def __init__(self, model_dir: Path, *, what: str, size: int, outputs: Sequence[str]) -> None:
        self.model_dir = Path(model_dir)
        self.what = what
        self.size = size
        self.outputs = tuple(outputs)
        self._serve: Any = None

    def __call__(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """The outputs for one batch, as NumPy arrays."""
        import tensorflow as tf

        result = self._signature()(**{INPUT_NAME: tf.convert_to_tensor(images, tf.float32)})
        return {name: result[name].numpy() for name in self.outputs}

    def _signature(self) -> Any:
        if self._serve is None:
            key = self.model_dir.resolve()
            with _LOADED_LOCK:
                if key not in _LOADED:
                    _LOADED[key] = self._load()
                self._serve = _LOADED[key][1]
        return self._serve

    def _load(self) -> tuple[Any, Any]:
        """Load the SavedModel and check its signature is this network's."""
        import tensorflow as tf

        try:
            loaded = tf.saved_model.load(str(self.model_dir))
        except (OSError, ValueError, tf.errors.OpError) as exc:
            raise ModelLoadError(
                f"cannot load the {self.what} from {self.model_dir}: {exc}"
            ) from None
        signature = loaded.signatures.get(SIGNATURE)
        inputs = {} if signature is None else signature.structured_input_signature[1]
        shape = [None, self.size, self.size, 3]
        if INPUT_NAME not in inputs or inputs[INPUT_NAME].shape.as_list() != shape:
            raise ModelLoadError(
                f"{self.model_dir}: not the {self.what} (no {SIGNATURE} for images)"
            )
        for name in self.outputs:
            if signature.structured_outputs.get(name) is None:
                raise ModelLoadError(f"{self.model_dir}: the {self.what} has no {name!r} output")
        return loaded, signature
