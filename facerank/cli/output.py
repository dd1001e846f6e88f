"""Output conventions shared by CLI commands.

stdout carries only results (JSON Lines, one object per input, so thousands of images stream
and can be piped to ``jq``); progress bars (:mod:`facerank.progress`) and diagnostics go to
stderr.
"""

from __future__ import annotations

import json
import sys
from typing import Any


def emit_json(record: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(record, ensure_ascii=False) + "\n")
    sys.stdout.flush()
