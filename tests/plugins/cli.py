"""Run the ``facerank`` command line as a real subprocess, as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def run_facerank(
    *args: str,
    data_dir: Path,
    env: dict[str, str] | None = None,
    check: bool = True,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """``facerank ARGS`` with ``FACERANK_DATA_DIR=data_dir``; fails the test on a non-zero exit
    unless ``check`` is False."""
    environment = {**os.environ, "FACERANK_DATA_DIR": str(data_dir), **(env or {})}
    result = subprocess.run(
        [sys.executable, "-m", "facerank.cli.main", *args],
        capture_output=True,
        text=True,
        env=environment,
        stdin=subprocess.DEVNULL,
        timeout=timeout,
        check=False,
    )
    if check and result.returncode != 0:
        pytest.fail(f"exit {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}")
    return result
