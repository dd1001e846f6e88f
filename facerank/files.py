"""Replacing a local file, or placing a folder, all at once: readers see the old state or the
new, never a mix.

Used wherever facerank keeps state in plain files that other processes read while it writes:
the local broker's spool, a training run's folder on the shared volume, the demo's photos;
and wherever it places a folder others load (model exports, installed models), so that a
folder that exists is complete.
"""

from __future__ import annotations

import os
import shutil
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


@contextmanager
def atomic_folder(target: Path) -> Iterator[Path]:
    """A private sibling folder to fill; renamed to ``target`` once the block succeeds.

    Readable by other users once in place (models are read by other service users). If
    ``target`` appeared meanwhile (another process made the same immutable folder), the
    winner's copy is kept and ours dropped; on an error nothing is left behind.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield staging
        staging.chmod(0o755)  # mkdtemp makes it private
        try:
            staging.rename(target)
        except OSError:
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # gone already once renamed
