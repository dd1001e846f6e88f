"""A labelled evaluation set from a folder of identity folders: ``DATASET_DIR/<identity>/<image>``.

The layout is the faces bucket's (``faces/<identity>/<file>``, deeper folders belong to their
first folder), and identity names follow the gallery's rules, so a set that evaluates well is
one that could be uploaded as is. Folders the gallery would refuse, and files outside any
identity folder, are skipped with the reason rather than failing the run; hidden files and
folders (``.DS_Store``, ``.git``) are ignored as the event source ignores them. Whether a file
is an image is left to the decoder, which says why it is not.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from facerank.errors import InvalidIdentityError
from facerank.evaluation.errors import DatasetError
from facerank.gallery.identity import normalise_identity


@dataclass(frozen=True)
class LabelledImage:
    path: Path
    identity: str


@dataclass(frozen=True)
class Skipped:
    """A path left out of the evaluation, and why (an error code and a message)."""

    path: Path
    code: str
    message: str


@dataclass(frozen=True)
class Dataset:
    root: Path
    images: tuple[LabelledImage, ...]
    """Sorted by identity folder, then path: the order every result refers to."""
    skipped: tuple[Skipped, ...]

    @property
    def name(self) -> str:
        return self.root.resolve().name or "dataset"


def load_dataset(root: Path) -> Dataset:
    """List ``root``'s identity folders and their files, in a deterministic order."""
    if not root.is_dir():
        what = "does not exist" if not root.exists() else "is not a folder"
        raise DatasetError(f"dataset {root} {what}: expected DATASET_DIR/<identity>/<image>")
    images: list[LabelledImage] = []
    skipped: list[Skipped] = []
    for entry in _visible_entries(root):
        if not entry.is_dir():
            skipped.append(
                Skipped(entry, "not_in_identity_folder", "not inside an identity folder")
            )
            continue
        try:
            identity = normalise_identity(entry.name)
        except InvalidIdentityError as exc:
            skipped.append(Skipped(entry, exc.code, str(exc)))
            continue
        images.extend(LabelledImage(path, identity) for path in _files_under(entry))
    if not images:
        raise DatasetError(
            f"no files in identity folders under {root}: expected DATASET_DIR/<identity>/<image>"
            + (f" (skipped, not identity folders: {len(skipped)})" if skipped else "")
        )
    return Dataset(root=root, images=tuple(images), skipped=tuple(skipped))


def _visible_entries(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    except OSError as exc:
        raise DatasetError(f"cannot list {folder}: {exc.strerror or exc}") from exc


def _files_under(folder: Path) -> list[Path]:
    """Every visible file below ``folder``, sorted; symbolic links to folders are not followed,
    so a link loop cannot make the walk endless."""
    found: list[Path] = []
    for parent, folders, files in os.walk(folder, onerror=_raise_listing_error):
        folders[:] = sorted(name for name in folders if not name.startswith("."))
        found.extend(Path(parent, name) for name in files if not name.startswith("."))
    return sorted(found)


def _raise_listing_error(exc: OSError) -> None:
    raise DatasetError(f"cannot list {exc.filename}: {exc.strerror or exc}") from exc
