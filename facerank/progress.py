"""A progress bar on stderr, for long loops over faces or images.

Its own module, not the CLI's: training's dataset export runs it too, in the retrain function,
and a component must not import the command-line application to draw a bar.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")


def progress(items: Iterable[T], *, total: int, unit: str, enabled: bool | None) -> Iterator[T]:
    """A progress bar on stderr; ``enabled=None`` shows it only when stderr is a terminal."""
    yield from tqdm(
        items,
        total=total,
        unit=unit,
        file=sys.stderr,
        disable=None if enabled is None else not enabled,
        dynamic_ncols=True,
        leave=False,
    )
