"""Replacing a local file all at once: readers see the old bytes or the new, never a mix.

Used wherever facerank keeps state in plain files that other processes read while it writes:
the local broker's spool, and a training run's folder on the shared volume.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


@contextmanager
def atomic_writer(
    path: Path, *, mode: int = 0o600, temp_prefix: str | None = None
) -> Iterator[BinaryIO]:
    """A binary handle whose bytes replace ``path`` in one rename once the block succeeds and
    they are on disk (the folder too, so the rename survives a power cut); on an error
    ``path`` is left as it was. ``temp_prefix`` names the temporary file (default
    ``.<name>.``), for callers that sweep their leftovers."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(
        prefix=temp_prefix or f".{path.name}.", suffix=".tmp", dir=path.parent
    )
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)
