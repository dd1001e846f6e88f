"""LFW's pairs files: which image pairs show one person and which two, in folds.

The format is LFW's own (Huang et al., 2007). The first line gives counts; then one line per
matched pair, ``name n1 n2``, and one per mismatched pair, ``name1 n1 name2 n2``, where ``n``
numbers a person's images (``Aaron_Guiel 1`` is ``Aaron_Guiel/Aaron_Guiel_0001.jpg`` under the
images folder). Three layouts share that grammar and differ only in the first line:

* ``N``: one set of N matched pairs, then N mismatched ones (LFW's published View 1 files);
* ``M U``: one set of M matched pairs, then U mismatched ones (a View 1 file with a pair left
  out, e.g. ``500 499``);
* ``F P``: F folds, each P matched pairs then P mismatched ones (View 2's ``pairs.txt``,
  ``10 300``): the protocol for reporting a final figure is ten-fold cross-validation.

The two-number forms are told apart by the number of pair lines (``M + U`` or ``2 F P``; when
both fit they describe the same pairs). Every line is checked against the kind its position
calls for, and errors name the line, because a pairs file that is silently misread yields a
plausible wrong accuracy.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from facerank.evaluation.errors import PairsFileError

_NAME = re.compile(r"[^/\\\x00-\x1f]+")
"""A person folder: any visible name without path separators (hidden names are refused)."""

_NUMBER = re.compile(r"[0-9]{1,6}")


@dataclass(frozen=True, order=True)
class ImageRef:
    """One LFW image: a person's name and the image's number (from 1)."""

    name: str
    number: int

    @property
    def relative(self) -> Path:
        """Its path under the images folder: ``<name>/<name>_<NNNN>.jpg``."""
        return Path(self.name, f"{self.name}_{self.number:04d}.jpg")


@dataclass(frozen=True)
class Pair:
    left: ImageRef
    right: ImageRef
    same: bool
    """True for a matched pair (one person), False for a mismatched one."""
    line: int
    """1-based line of the file, for messages."""


@dataclass(frozen=True)
class PairsFile:
    path: Path
    folds: tuple[tuple[Pair, ...], ...]
    """One fold for a single set; ten for LFW View 2. Matched pairs first within each fold."""

    @property
    def pairs(self) -> tuple[Pair, ...]:
        return tuple(pair for fold in self.folds for pair in fold)

    @property
    def cross_validation(self) -> bool:
        """Whether the file is a fold file, scored by fitting on the other folds each time."""
        return len(self.folds) > 1

    @property
    def images(self) -> tuple[ImageRef, ...]:
        """Every image the pairs name, once each, sorted."""
        return tuple(sorted({ref for pair in self.pairs for ref in (pair.left, pair.right)}))


def read_pairs(path: Path) -> PairsFile:
    """Read and check a pairs file; :class:`PairsFileError` says what is wrong, and where."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise PairsFileError(f"{path} is not UTF-8 text: {exc.reason}") from None
    except OSError as exc:
        raise PairsFileError(f"cannot read pairs file {path}: {exc.strerror or exc}") from None
    return parse_pairs(text, path)


def parse_pairs(text: str, path: Path) -> PairsFile:
    """Parse the text of a pairs file (``path`` is only used in messages and the result)."""
    lines = [(number, line.split()) for number, line in enumerate(text.splitlines(), 1)]
    lines = [(number, fields) for number, fields in lines if fields]
    if not lines:
        raise PairsFileError(f"{path} is empty: expected a first line with the pair counts")
    (header_line, header), body = lines[0], lines[1:]
    layout = _layout(header, len(body), f"{path} line {header_line}")
    folds: list[tuple[Pair, ...]] = []
    position = 0
    for matched, mismatched in layout:
        kinds = [True] * matched + [False] * mismatched
        chunk = zip(body[position : position + len(kinds)], kinds, strict=True)
        folds.append(tuple(_pair(path, line, fields, same) for (line, fields), same in chunk))
        position += len(kinds)
    return PairsFile(path=path, folds=tuple(folds))


def _layout(header: list[str], pair_lines: int, where: str) -> list[tuple[int, int]]:
    """``(matched, mismatched)`` per fold, from the header's counts and the lines that follow."""
    if not 1 <= len(header) <= 2 or not all(_NUMBER.fullmatch(v) for v in header):
        raise PairsFileError(
            f"{where}: expected the pair counts ('N', 'MATCHED MISMATCHED' or 'FOLDS N'), "
            f"got {' '.join(header)!r}"
        )
    first, second = (int(v) for v in (header * 2)[:2])
    if first + second == 0:
        raise PairsFileError(f"{where}: the file announces no pairs")
    if len(header) == 1 and pair_lines == 2 * first:
        return [(first, first)]
    if len(header) == 2 and pair_lines == first + second:
        return [(first, second)]
    if len(header) == 2 and second > 0 and pair_lines == 2 * first * second:
        return [(second, second)] * first
    expected = (
        f"{2 * first} pair lines ({first} matched, then {first} mismatched)"
        if len(header) == 1
        else f"{first + second} pair lines ({first} matched, then {second} mismatched) or "
        f"{2 * first * second} ({first} folds of {second} matched, then {second} mismatched)"
    )
    raise PairsFileError(f"{where}: the counts announce {expected}, but {pair_lines} follow")


def _pair(path: Path, line: int, fields: list[str], same: bool) -> Pair:
    where = f"{path} line {line}"
    if same and len(fields) == 3:
        name, first, second = fields
        left, right = _ref(where, name, first), _ref(where, name, second)
        if left == right:
            raise PairsFileError(f"{where}: a matched pair of one image with itself")
        return Pair(left, right, same, line)
    if not same and len(fields) == 4:
        left, right = _ref(where, *fields[:2]), _ref(where, *fields[2:])
        if left.name == right.name:
            raise PairsFileError(f"{where}: a mismatched pair of one person ({left.name})")
        return Pair(left, right, same, line)
    expected = "a matched pair 'name n1 n2'" if same else "a mismatched pair 'name1 n1 name2 n2'"
    raise PairsFileError(f"{where}: expected {expected} here, got {len(fields)} fields")


def _ref(where: str, name: str, number: str) -> ImageRef:
    if not _NAME.fullmatch(name) or name.startswith("."):
        raise PairsFileError(f"{where}: {name!r} is not a person's folder name")
    if not _NUMBER.fullmatch(number) or int(number) == 0:
        raise PairsFileError(f"{where}: image number {number!r} is not a positive integer")
    return ImageRef(name, int(number))
