"""Output conventions shared by CLI commands.

stdout carries only results (JSON Lines, one object per input, so thousands of images stream
and can be piped to ``jq``); progress bars and diagnostics go to stderr.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

from tqdm import tqdm

from facerank.errors import FacerankError

T = TypeVar("T")


def emit_json(record: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(record, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def error_record(exc: FacerankError) -> dict[str, str]:
    """The machine-readable form of an error: a stable ``code`` and a human ``message``."""
    return {"code": exc.code, "message": str(exc)}


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
